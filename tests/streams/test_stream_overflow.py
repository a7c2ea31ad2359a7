"""The memory bound of a worker: the oldest open traces are published early, never dropped."""

from __future__ import annotations

from pathlib import Path

from conftest import fresh_settings
from stream_helpers import WorkerProcess, poll_metric, read_documents

import tracebus
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port


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
