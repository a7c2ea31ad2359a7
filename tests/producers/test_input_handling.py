"""Bad input, sampling, redaction and configuration: the SDK never raises into app code."""

from __future__ import annotations

import pytest
from conftest import read_batches

import tracebus
from tracebus.config import KafkaSettings
from tracebus.schemas import EventBatch, ObservationEvent, new_trace_id


def final(batches: list[EventBatch]) -> dict[str, ObservationEvent]:
    return {
        e.name: e
        for b in batches
        for e in b.events
        if isinstance(e, ObservationEvent) and e.end_time_unix_nano is not None
    }


def test_invalid_calls_are_reported_and_repaired_not_raised(kafka: KafkaSettings) -> None:
    client = tracebus.Client(**kafka.model_dump(), linger_ms=5)
    with (
        client.trace("bad-id", trace_id="not-hex") as root,
        client.start_observation("odd-kind", kind="llm") as odd,
    ):
        odd.update(level="LOUD")
    client.score("orphan-score", 1.0)
    assert client.counters.errors == 4
    assert "score 'orphan-score' has no trace" in client.counters.last_error
    assert len(root.trace_id) == 32 and root.trace_id != "not-hex"
    assert odd.kind == "span" and odd.level == "DEFAULT"
    assert client.flush(10)
    received = final(read_batches(kafka, lambda b: len(final(b)) >= 2))
    assert received["odd-kind"].trace_id == root.trace_id
    client.close()


def test_unserialisable_values_are_described_instead_of_failing(kafka: KafkaSettings) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque handle>"

    cycle: list[object] = []
    cycle.append(cycle)
    client = tracebus.Client(**kafka.model_dump(), linger_ms=5)
    with client.trace("values"):
        client.event("opaque", input={"handle": Opaque(), "raw": b"\x00\x01"})
        client.event("cyclic", input=cycle, output="fine")
    assert client.flush(10)
    received = final(read_batches(kafka, lambda b: len(final(b)) >= 3))
    assert received["opaque"].input == {"handle": "<Opaque handle>", "raw": "<2 bytes>"}
    assert received["cyclic"].input.startswith("<not serialisable by tracebus")
    assert received["cyclic"].output == "fine"
    client.close()


def test_sampling_keeps_or_drops_whole_traces_by_trace_id(kafka: KafkaSettings) -> None:
    trace_ids = [new_trace_id() for _ in range(200)]
    client = tracebus.Client(**kafka.model_dump(), linger_ms=5, sample_rate=0.5)
    for trace_id in trace_ids:
        with client.trace("sampled", trace_id=trace_id), client.span("child"):
            client.event("leaf")
    kept_count = 200 - client.counters.sampled_out_traces
    assert 60 < kept_count < 140
    assert client.flush(10)
    batches = read_batches(
        kafka, lambda b: sum(e.type == "trace" for x in b for e in x.events) >= kept_count
    )
    per_trace: dict[str, set[str]] = {}
    for batch in batches:
        per_trace.setdefault(batch.trace_id, set()).update(
            e.name for e in batch.events if isinstance(e, ObservationEvent)
        )
    assert len(per_trace) == kept_count
    assert all(names == {"sampled", "child", "leaf"} for names in per_trace.values())
    # Every service with the same rate takes the same decision for a trace id.
    other = tracebus.Client(**kafka.model_dump(), sample_rate=0.5, enabled=False)
    assert {t for t in trace_ids if other._sampled(t)} == set(per_trace)
    client.close()


def test_redaction_runs_before_serialisation_and_a_failing_hook_drops_the_event(
    kafka: KafkaSettings,
) -> None:
    def redact(event: dict[str, object]) -> dict[str, object]:
        if event.get("name") == "explodes":
            raise RuntimeError("redactor bug")
        if isinstance(event.get("input"), dict):
            event["input"] = {k: "***" if k == "api_key" else v for k, v in event["input"].items()}
        return event

    client = tracebus.Client(**kafka.model_dump(), linger_ms=5, redact=redact)
    with client.trace("redacted"):
        client.event("call", input={"api_key": "sk-live-123", "q": "weather"})
        client.event("explodes", input={"api_key": "sk-live-456"})
    assert client.flush(10)
    received = final(read_batches(kafka, lambda b: len(final(b)) >= 2))
    assert received["call"].input == {"api_key": "***", "q": "weather"}
    assert "explodes" not in received
    assert "RuntimeError('redactor bug')" in client.counters.last_error
    client.close()


def test_oversized_input_arrives_truncated_with_the_cut_recorded(kafka: KafkaSettings) -> None:
    client = tracebus.Client(**kafka.model_dump(), linger_ms=5, max_field_bytes=4096)
    with client.trace("big"):
        client.event("huge-prompt", input="z" * 100_000)
    assert client.flush(10)
    received = final(read_batches(kafka, lambda b: len(final(b)) >= 2))["huge-prompt"]
    assert received.input.endswith("…[truncated by tracebus: 100002 bytes]")
    assert received.truncated[0].field == "input"
    assert received.truncated[0].original_bytes == 100_002
    client.close()


def test_settings_come_from_arguments_then_tracebus_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACEBUS_SAMPLE_RATE", "0.25")
    monkeypatch.setenv("TRACEBUS_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("TRACEBUS_ENVIRONMENT", "production")
    client = tracebus.Client(sample_rate=0.75, enabled=False)
    assert client.settings.sample_rate == 0.75
    assert client.settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert client.settings.environment == "production"
    monkeypatch.setenv("TRACEBUS_SAMPLE_RATE", "2")
    with pytest.raises(ValueError, match="sample_rate"):
        tracebus.Client()


def test_a_disabled_client_sends_nothing_but_keeps_the_api_working() -> None:
    client = tracebus.Client(enabled=False)
    with client.trace("off") as root, client.generation("llm", model="m") as llm:
        llm.update(output="x")
        root.score_trace("s", 1)
    assert client.counters.accepted == 0
    assert root.ended and llm.ended
