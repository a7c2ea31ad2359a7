"""The memory bound of a worker: the oldest open traces are published early, never dropped."""

from __future__ import annotations

from pathlib import Path

from stream_helpers import WorkerProcess, fresh_settings, read_documents

import tracebus
from tracebus.kafka import EmbeddedBroker


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
