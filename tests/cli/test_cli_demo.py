"""`tracebus demo` and `tracebus.demo.run_demo`: realistic traffic, every event delivered."""

from __future__ import annotations

import threading
import time
from collections import Counter

from cli_helpers import kafka_options, run_cli, table_int
from conftest import read_batches

from tracebus import Client
from tracebus.config import KafkaSettings
from tracebus.demo import run_demo
from tracebus.kafka.broker import free_port
from tracebus.schemas import EventBatch, ObservationEvent, ScoreEvent, TraceEvent


def events_of(batches: list[EventBatch]) -> list:
    return [event for batch in batches for event in batch.events]


def test_run_demo_sends_realistic_traces_and_every_event_arrives(kafka: KafkaSettings) -> None:
    client = Client(**kafka.model_dump())
    stats = run_demo(client, 200, 0, seed=3)
    assert client.close(15)
    counters = client.counters
    assert counters.sent + counters.coalesced == counters.accepted
    assert counters.dropped == counters.errors == 0

    batches = read_batches(kafka, lambda got: len(events_of(got)) >= counters.sent)
    events = events_of(batches)
    assert len(events) == counters.sent
    assert len({event.event_id for event in events}) == len(events)

    traces = {e.trace_id: e for e in events if isinstance(e, TraceEvent)}
    assert len(traces) == stats.traces == 200
    for trace in traces.values():
        assert trace.name == "workflow"
        assert trace.user_id and trace.session_id and trace.tags
        assert trace.metadata and trace.metadata["app_name"] in trace.tags

    # The final snapshot of every observation (events are upserts; the last one wins).
    observations = {e.observation_id: e for e in events if isinstance(e, ObservationEvent)}
    assert len(observations) == stats.observations
    assert all(o.end_time_unix_nano is not None for o in observations.values())
    kinds = Counter(o.kind for o in observations.values())
    for kind in ("chain", "span", "generation", "tool", "retriever", "agent", "embedding"):
        assert kinds[kind] > 0, kinds
    assert kinds["generation"] == stats.generations

    roots = [o for o in observations.values() if o.parent_observation_id is None]
    assert len(roots) == 200
    failed = [root for root in roots if root.level == "ERROR"]
    assert len(failed) == stats.failed_traces
    assert 2 <= len(failed) <= 25  # about 5%
    assert all(root.status_message for root in failed)
    assert any(o.level == "WARNING" for o in observations.values())

    models = {o.model for o in observations.values() if o.kind == "generation"}
    assert {"gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20241022"} <= models
    generations = [o for o in observations.values() if o.kind == "generation" and o.output]
    for generation in generations:
        assert generation.provider and generation.model_parameters and generation.usage
        assert isinstance(generation.input, list) and generation.input[0]["role"] == "system"
        usage = generation.usage
        assert usage.input_tokens and usage.output_tokens
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        start, end = generation.start_time_unix_nano, generation.end_time_unix_nano
        assert start < generation.completion_start_time_unix_nano <= end
    assert any(g.usage.input_cache_read_tokens for g in generations)
    assert any(g.usage.output_reasoning_tokens for g in generations)
    assert any(g.cost and g.cost.total for g in generations)

    retrievals = [o for o in observations.values() if o.kind == "retriever" and o.level != "ERROR"]
    assert any(r.output["documents"] for r in retrievals)

    # Children lie within their parents' time span.
    for child in observations.values():
        parent = observations.get(child.parent_observation_id or "")
        if parent is not None:
            assert parent.start_time_unix_nano <= child.start_time_unix_nano
            assert child.end_time_unix_nano <= parent.end_time_unix_nano

    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert len(scores) == stats.scores > 0
    assert {s.data_type for s in scores} >= {"BOOLEAN", "NUMERIC"}


def test_run_demo_paces_to_the_rate_and_stops_when_asked() -> None:
    client = Client(enabled=False)
    started = time.monotonic()
    stats = run_demo(client, 21, rate=200.0)
    elapsed = time.monotonic() - started
    assert stats.traces == 21
    assert 20 / 200 <= elapsed < 1.0  # the first trace goes at once, then one per 5 ms

    stop = threading.Event()
    stopped = run_demo(
        client, None, 0, on_trace=lambda s: s.traces >= 7 and stop.set(), should_stop=stop.is_set
    )
    assert stopped.traces == 7


def test_run_demo_is_reproducible_by_seed() -> None:
    client = Client(enabled=False)
    first, second = run_demo(client, 50, seed=11), run_demo(client, 50, seed=11)
    assert first == second
    assert run_demo(client, 50, seed=12) != first


def test_demo_command_sends_every_trace(kafka: KafkaSettings) -> None:
    result = run_cli("demo", "--traces", "25", "--rate", "0", *kafka_options(kafka))

    assert result.exit_code == 0, result.output
    assert "producer counters" in result.stdout
    sent = table_int(result.stdout, "sent")
    assert table_int(result.stdout, "traces") == 25
    batches = read_batches(kafka, lambda got: len(events_of(got)) >= sent)
    events = events_of(batches)
    assert len(events) == sent
    assert len({e.trace_id for e in events if isinstance(e, TraceEvent)}) == 25


def test_demo_command_exits_3_when_no_broker_answers() -> None:
    result = run_cli("demo", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--timeout", "0.3")
    assert result.exit_code == 3, result.output
    assert "no Kafka broker answers" in result.stderr
