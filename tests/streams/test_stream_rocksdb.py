"""The production store: the same worker with its table in RocksDB (rocksdict)."""

from __future__ import annotations

from pathlib import Path

from conftest import fresh_settings
from stream_helpers import WorkerProcess, of_traces, read_documents

import tracebus
from tracebus.kafka import EmbeddedBroker


def test_a_worker_with_a_rocksdb_store_assembles_traces_and_keeps_them_on_disk(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    data_dir = tmp_path / "data"
    worker = WorkerProcess(
        settings, tmp_path, TRACEBUS_STORE="rocksdb", TRACEBUS_DATA_DIR=str(data_dir)
    )
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    try:
        with client.trace("on-disk") as root, client.span("step"):
            pass
        assert client.flush(10)
        [document] = read_documents(settings, of_traces({root.trace_id}), timeout=90)
    finally:
        client.close()
        assert worker.stop() == 0, worker.log_tail()
    assert sorted(o.name for o in document.observations) == ["on-disk", "step"]
    assert list(data_dir.rglob("traces-*.db"))
