"""The memory bound of a worker: the oldest open traces are published early, never dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from conftest import eventually, fresh_settings
from stream_helpers import WorkerProcess, metric, poll_metric, read_documents
from whereabouts import stream_app_id, whole_topic

import tracebus
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port
from tracebus.schemas import encode_batch, new_observation_id, new_trace_id


def test_open_traces_beyond_the_bound_are_published_early_oldest_first(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    worker = WorkerProcess(
        settings, tmp_path, TRACEBUS_MAX_OPEN_TRACES="5", TRACEBUS_IDLE_TIMEOUT_S="600"
    )
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    try:
        roots = []
        for i in range(12):
            roots.append(client.trace(f"never-ends-{i}"))  # roots stay open
            assert client.flush(10)
        documents = read_documents(settings, lambda d: len(d) >= 7, timeout=90)
    finally:
        client.close()
        assert worker.stop() == 0, worker.log_tail()
    # The 5 traces the worker saw last are still held; the others went out early, once each.
    assert len({d.trace_id for d in documents}) == len(documents) == 7
    assert {d.trace_id for d in documents} < {root.trace_id for root in roots}
    assert {d.completed_by for d in documents} == {"evicted"}
    assert all(d.observations[0].flags == ["still_open"] for d in documents)


def test_published_traces_kept_for_late_events_are_forgotten_first_at_the_bound(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    metrics_port = free_port()
    worker = WorkerProcess(
        settings,
        tmp_path,
        TRACEBUS_MAX_OPEN_BYTES=str(1024 * 1024),
        TRACEBUS_METRICS_PORT=str(metrics_port),
    )
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    try:
        roots = []
        for i in range(30):  # about 3 MiB of published traces against a 1 MiB bound
            with client.trace(f"big-{i}", input="x" * 100_000) as root:
                pass
            roots.append(root)
        assert client.flush(10)
        read_documents(settings, lambda d: len(d) >= 30, timeout=90)
        poll_metric(metrics_port, "tracebus_stream_forgotten_traces_total", 15, timeout=30)
        for root in roots:
            with client.span("late", parent=root):
                pass
        assert client.flush(10)
        documents = read_documents(
            settings, lambda d: sum(x.revision == 2 for x in d) >= 30, timeout=60
        )
    finally:
        client.close()
        assert worker.stop() == 0, worker.log_tail()
    second = [d for d in documents if d.revision == 2]
    assert {d.trace_id for d in second} == {r.trace_id for r in roots}
    forgotten = [d for d in second if [o.name for o in d.observations] == ["late"]]
    kept = [d for d in second if len(d.observations) == 2]
    # Most content was forgotten to respect the bound, yet every late event got a new revision.
    assert len(forgotten) >= 15 and len(forgotten) + len(kept) == 30


def write_backlog(settings: KafkaSettings, count: int, input_bytes: int, roots_end: bool) -> None:
    """`count` records of one trace each: a root that has started, and ended if `roots_end`."""

    async def write() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, linger_ms=20, enable_idempotence=False
        )
        await producer.start()
        try:
            for _ in range(count):
                trace_id = new_trace_id()
                root = {
                    "schema_version": 1,
                    "type": "observation",
                    "event_id": new_observation_id(),
                    "trace_id": trace_id,
                    "timestamp_unix_nano": 1,
                    "observation_id": new_observation_id(),
                    "kind": "agent",
                    "name": "running",
                    "start_time_unix_nano": 1,
                    "input": "x" * input_bytes,
                }
                if roots_end:
                    root["end_time_unix_nano"] = 2
                value = encode_batch(trace_id, [orjson.dumps(root)])
                await producer.send(settings.events_topic, value, key=trace_id.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(write())


def test_a_worker_catching_up_on_a_backlog_holds_its_bound_while_it_reads(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Evictions and publication acknowledgements travel as control records in a topic of the
    worker's own: they do not queue behind the backlog, so traces go out at the bound while the
    worker reads it, instead of all being held until it has read everything. The changelog
    shows the order: traces are marked `publishing` between the backlog's records, not after
    the last of them; and their documents leave meanwhile too (the publisher awaits each
    trace's mark, not a producer buffer that a worker reading a backlog never lets empty)."""
    # One partition, so that the oldest traces, evicted first, are in the partition being read;
    # and several fetches of it (36 MB): the consumer reads ahead one fetch (8 MiB) at most.
    settings = fresh_settings(broker.bootstrap_servers, partitions=1)
    backlog = 3_000
    write_backlog(settings, backlog, input_bytes=12_000, roots_end=False)
    metrics_port = free_port()
    worker = WorkerProcess(
        settings,
        tmp_path,
        TRACEBUS_MAX_OPEN_TRACES="100",
        TRACEBUS_IDLE_TIMEOUT_S="600",
        TRACEBUS_METRICS_PORT=str(metrics_port),
    )
    publishing = "tracebus_stream_publishing_traces"
    try:
        # Traces evicted while it reads are on their way out until acknowledged: then none.
        poll_metric(metrics_port, publishing, 1, timeout=90)
        poll_metric(metrics_port, "tracebus_stream_records_total", backlog, timeout=90)
        eventually(lambda: metric(metrics_port, publishing) == 0, 30, f"{publishing} back to 0")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    changelog = asyncio.run(whole_topic(settings, f"{stream_app_id(settings)}-traces-changelog"))
    # Records (`<id>/<p>/<offset>/<ns>`), not their deletions once published and forgotten.
    records = [e.offset for e in changelog if e.key.count(b"/") == 3 and e.value]
    marked = [
        e.offset
        for e in changelog
        if e.value and e.key.count(b"/") == 0 and b'"status":"publishing"' in e.value
    ]
    assert len(records) == backlog
    assert marked and marked[0] < records[-1]
    last_record_ms = max(e.timestamp for e in changelog if e.key.count(b"/") == 3 and e.value)
    documents = asyncio.run(whole_topic(settings, settings.traces_topic))
    assert documents and min(d.timestamp for d in documents) < last_record_ms


def test_a_worker_catching_up_on_a_backlog_of_complete_traces_publishes_them_at_its_bound(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A trace that looks complete waits for its grace `close`, which its partition reads
    behind the backlog. Meanwhile it stays held and counted: the byte bound publishes it while
    the worker reads (as complete, since it was due anyway), instead of every trace of the
    backlog waiting in memory, uncounted, for its close."""
    settings = fresh_settings(broker.bootstrap_servers, partitions=1)
    backlog = 4_000  # 48 MB against a bound of 2 MiB
    write_backlog(settings, backlog, input_bytes=12_000, roots_end=True)
    # A short grace period: traces are due soon after they are read, long before their close.
    worker = WorkerProcess(
        settings, tmp_path, TRACEBUS_MAX_OPEN_BYTES=str(2 * 1024 * 1024), TRACEBUS_GRACE_S="0.1"
    )
    try:
        documents = read_documents(settings, lambda d: len(d) >= backlog, timeout=90)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert len({d.trace_id for d in documents}) == len(documents) == backlog
    # Those past their grace period go out as complete; younger ones are evicted at the bound.
    assert {d.completed_by for d in documents} <= {"root_ended", "evicted"}
    changelog = asyncio.run(whole_topic(settings, f"{stream_app_id(settings)}-traces-changelog"))
    last_record = max(e.offset for e in changelog if e.key.count(b"/") == 3 and e.value)
    marked = [e.offset for e in changelog if e.value and b'"status":"publishing"' in e.value]
    early = sum(offset < last_record for offset in marked)
    assert early >= backlog // 2, f"{early} traces marked before the backlog's last record"


def test_evictions_reach_the_worker_ahead_of_the_records_it_has_fetched(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The consumer fetches up to 8 MiB per partition ahead of the agent. Control records
    (evictions at the bound, publication acknowledgements) reach the agent before events records
    fetched earlier: behind them, every trace evicted or published meanwhile would stay in
    memory until the agent had worked through the whole read-ahead. So a trace is evicted soon
    after it passes the bound (100 open traces): in the changelog, few records come between the
    trace's record and its `publishing` mark (a median of ~5,000 when control records waited)."""
    settings = fresh_settings(broker.bootstrap_servers, partitions=1)
    backlog = 30_000  # small records: over 10,000 in a fetch
    write_backlog(settings, backlog, input_bytes=200, roots_end=False)
    worker = WorkerProcess(
        settings, tmp_path, TRACEBUS_MAX_OPEN_TRACES="100", TRACEBUS_IDLE_TIMEOUT_S="600"
    )
    try:
        read_documents(settings, lambda d: len(d) >= backlog - 100, timeout=120)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    changelog = asyncio.run(whole_topic(settings, f"{stream_app_id(settings)}-traces-changelog"))
    read_at: dict[bytes, int] = {}  # trace id → how many records came before its record
    records_since_read = []
    for entry in changelog:
        if entry.value and entry.key.count(b"/") == 3:
            read_at[entry.key.split(b"/")[0]] = len(read_at)
        elif entry.value and b'"status":"publishing"' in entry.value:
            records_since_read.append(len(read_at) - read_at[entry.key])
    assert len(records_since_read) >= backlog - 100
    assert sorted(records_since_read)[len(records_since_read) // 2] <= 2_500
