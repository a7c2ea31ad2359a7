"""Real sink workers deliver from the real broker to strict stand-ins: batching, retries,
bisecting, dead letters, outages, SIGKILL and several workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import eventually, fresh_settings
from sink_helpers import SinkProcess, dead_letters, delivered_traces, document, publish
from standins.langfuse import LangfuseStandIn

from tracebus.kafka import EmbeddedBroker

KEYS = {"TRACEBUS_LANGFUSE_PUBLIC_KEY": "pk-lf-test", "TRACEBUS_LANGFUSE_SECRET_KEY": "sk-lf-test"}


def langfuse_env(standin: LangfuseStandIn, **extra: str) -> dict[str, str]:
    return {**KEYS, "TRACEBUS_LANGFUSE_HOST": standin.url, **extra}


def test_jsonl_sink_writes_every_trace_once_and_keeps_the_highest_revision(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    first = document("rev", revision=1)
    second = first.model_copy(update={"revision": 2})
    documents = [document(f"t-{i}") for i in range(20)]
    publish(settings, [*documents, second, first])  # a replayed lower revision comes last
    out = tmp_path / "out"
    worker = SinkProcess("jsonl", settings, tmp_path, TRACEBUS_JSONL_DIR=str(out))

    def lines() -> list[dict[str, object]]:
        return [
            json.loads(line) for f in out.glob("*.jsonl") for line in f.read_text().splitlines()
        ]

    try:
        eventually(lambda: len(lines()) >= 21, 60, "21 documents in the files")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    written = lines()
    assert sorted(d["trace"]["name"] for d in written) == sorted(
        ["rev", *(f"t-{i}" for i in range(20))]
    )
    assert [d["revision"] for d in written if d["trace_id"] == first.trace_id] == [2]


def test_langfuse_sink_batches_requests_and_honours_retry_after(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    documents = [document(f"t-{i}") for i in range(12)]
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        standin.fail_next(429, retry_after=2, endpoint="traces")
        standin.fail_next(503, count=2, endpoint="traces")
        worker = SinkProcess(
            "langfuse",
            settings,
            tmp_path,
            **langfuse_env(standin, TRACEBUS_BATCH_MAX_TRACES="5", TRACEBUS_MAX_IN_FLIGHT="1"),
        )
        try:
            publish(settings, documents)
            eventually(lambda: any(r.status == 429 for r in standin.requests), 60, "the 429")
            rate_limited_at = time.monotonic()
            eventually(lambda: any(r.status == 503 for r in standin.requests), 30, "a retry")
            waited = time.monotonic() - rate_limited_at
            eventually(
                lambda: delivered_traces(standin) == {d.trace_id for d in documents},
                60,
                "every trace at the stand-in",
            )
        finally:
            assert worker.stop() == 0, worker.log_tail()
        assert waited >= 1.8  # Retry-After: 2 was honoured
        assert all(count == 1 for count in standin.receipts.values())
        span_requests = [r for r in standin.requests if r.path.endswith("/v1/traces")]
        assert len([r for r in span_requests if r.status == 200]) >= 3  # at most 5 per request


def test_a_batch_too_large_is_bisected_and_only_the_offender_dead_lettered(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    small = [document(f"small-{i}") for i in range(7)]
    huge = document("huge", input_value="x" * 400_000)
    with LangfuseStandIn("pk-lf-test", "sk-lf-test", max_body_bytes=200_000) as standin:
        publish(settings, [*small[:3], huge, *small[3:]])
        worker = SinkProcess(
            "langfuse",
            settings,
            tmp_path,
            **langfuse_env(standin, TRACEBUS_LINGER_MS="1000"),
        )
        try:
            letters = dead_letters(settings, 1)
            eventually(
                lambda: delivered_traces(standin) == {d.trace_id for d in small},
                30,
                "the small traces at the stand-in",
            )
        finally:
            assert worker.stop() == 0, worker.log_tail()
    [letter] = letters
    headers = dict(letter.headers)
    assert letter.key == huge.trace_id.encode()
    assert headers["tracebus-status"] == b"413"
    assert headers["tracebus-stage"] == b"sink:langfuse"
    assert huge.trace_id not in delivered_traces(standin)


def test_a_permanent_error_dead_letters_the_batch_with_the_response(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    rejected = document("rejected")
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        standin.fail_next(404, endpoint="traces")
        publish(settings, [rejected])
        worker = SinkProcess("langfuse", settings, tmp_path, **langfuse_env(standin))
        try:
            [letter] = dead_letters(settings, 1)
            later = document("later")
            publish(settings, [later])
            eventually(lambda: later.trace_id in delivered_traces(standin), 30, "the next trace")
        finally:
            assert worker.stop() == 0, worker.log_tail()
    headers = dict(letter.headers)
    assert headers["tracebus-status"] == b"404"
    assert b"answered 404" in headers["tracebus-reason"]
    assert letter.value == rejected.model_dump_json(exclude_none=True).encode()


def test_an_outage_then_recovery_delivers_everything_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    before = [document(f"before-{i}") for i in range(5)]
    during = [document(f"during-{i}") for i in range(10)]
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        worker = SinkProcess("langfuse", settings, tmp_path, **langfuse_env(standin))
        try:
            publish(settings, before)
            eventually(lambda: len(delivered_traces(standin)) == 5, 60, "the first traces")
            with standin.down():
                publish(settings, during)
                time.sleep(1.0)  # the destination stays down for a while, by design of the test
            everything = {d.trace_id for d in before + during}
            eventually(lambda: delivered_traces(standin) == everything, 60, "every trace")
        finally:
            assert worker.stop() == 0, worker.log_tail()
        assert all(count == 1 for count in standin.receipts.values())


def test_a_sink_killed_mid_batch_loses_nothing_and_two_workers_share_the_work(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    documents = [document(f"t-{i}") for i in range(40)]
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        standin.hang_next(after_recording=True)  # the destination got it, the answer never came
        first = SinkProcess("langfuse", settings, tmp_path, **langfuse_env(standin))
        publish(settings, documents[:20])
        eventually(lambda: standin.held > 0, 60, "a request stored and held unanswered")
        first.kill()
        workers = [
            SinkProcess("langfuse", settings, tmp_path, **langfuse_env(standin)) for _ in range(2)
        ]
        try:
            publish(settings, documents[20:])
            eventually(
                lambda: delivered_traces(standin) == {d.trace_id for d in documents},
                90,
                "every trace after the crash",
            )
        finally:
            codes = [w.stop() for w in workers]
        assert codes == [0, 0], [w.log_tail() for w in workers]
        # Re-sent after the crash, but one row per span at the destination.
        assert len(standin.spans) == len(documents)
        assert max(standin.receipts.values()) <= 2
        assert all(b"assigned [" in w.log_path.read_bytes() for w in workers)
