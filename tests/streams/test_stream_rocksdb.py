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


def test_a_worker_restarted_on_its_rocksdb_store_still_knows_the_traces_it_published(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    store = {"TRACEBUS_STORE": "rocksdb", "TRACEBUS_DATA_DIR": str(tmp_path / "data")}
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    try:
        worker = WorkerProcess(settings, tmp_path, **store)
        try:
            with client.trace("kept") as root, client.span("first"):
                pass
            assert client.flush(10)
            read_documents(settings, of_traces({root.trace_id}), timeout=90)
        finally:
            assert worker.stop() == 0, worker.log_tail()
        worker = WorkerProcess(settings, tmp_path, **store)
        try:
            with client.span("late", parent=root):
                pass
            assert client.flush(10)
            documents = read_documents(settings, of_traces({root.trace_id}, 2), timeout=90)
        finally:
            assert worker.stop() == 0, worker.log_tail()
    finally:
        client.close()
    [latest] = [d for d in documents if d.revision == 2]
    assert {o.name: o.flags for o in latest.observations} == {
        "kept": [],
        "first": [],
        "late": ["late"],
    }
