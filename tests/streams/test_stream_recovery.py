"""Several real workers share the partitions; a SIGKILLed worker loses no trace."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import eventually, fresh_settings
from stream_helpers import WorkerProcess, metric, of_traces, read_documents

import tracebus
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port


@pytest.mark.timeout(240)
def test_a_killed_worker_loses_no_trace_and_publishes_nothing_twice(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    ports = [free_port(), free_port()]
    workers = [WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(port)) for port in ports]
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    try:
        first_wave = set()
        for i in range(40):
            with client.trace(f"wave-1-{i}") as root, client.span("step"):
                pass
            first_wave.add(root.trace_id)
        assert client.flush(10)
        read_documents(settings, of_traces(first_wave), timeout=90)
        assert all(metric(port, "tracebus_stream_records_total") > 0 for port in ports), (
            "both workers share the work"
        )

        open_roots = []
        for i in range(30):
            root = client.trace(f"open-{i}")
            with client.span("done-before-the-crash", parent=root):
                pass
            open_roots.append(root)
        assert client.flush(10)
        eventually(
            lambda: sum(metric(p, "tracebus_stream_records_total") for p in ports) >= 40 + 30,
            30,
            "the workers to hold the open traces",
        )
        workers[0].kill()

        for root in open_roots:
            root.end()
        second_wave = set()
        for i in range(30):
            with client.trace(f"wave-2-{i}") as root:
                pass
            second_wave.add(root.trace_id)
        assert client.flush(10)
        expected = first_wave | second_wave | {r.trace_id for r in open_roots}
        documents = read_documents(settings, of_traces(expected), timeout=150)
    finally:
        client.close()
        for worker in workers:
            worker.stop()

    keys = [(d.trace_id, d.revision, d.part) for d in documents]
    assert len(keys) == len(set(keys)), "a revision was published twice"
    latest = {}
    for document in documents:
        if (
            document.trace_id not in latest
            or document.revision > latest[document.trace_id].revision
        ):
            latest[document.trace_id] = document
    for root in open_roots:
        names = sorted(o.name for o in latest[root.trace_id].observations)
        assert names == sorted([root.name, "done-before-the-crash"])
        assert latest[root.trace_id].completed_by == "root_ended"
