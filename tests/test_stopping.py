"""A worker's stop ends within TRACEBUS_STOP_TIMEOUT_S, even when the broker cannot take what
the worker would write or commit on its way out: it exits with code 5 as if killed, and the
next worker delivers what it left."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from aiokafka.errors import NotLeaderForPartitionError
from conftest import eventually, fresh_settings
from kafka_proxy import KafkaProxy, worker_clients
from pydantic import ValidationError
from sink_helpers import SinkProcess, document, publish
from streams.stream_helpers import WorkerProcess, of_traces, read_documents, send_trace
from workers import CliWorker

import tracebus
from tracebus.cli.common import ExitCode
from tracebus.config import GroupSettings
from tracebus.kafka import EmbeddedBroker

pytestmark = pytest.mark.timeout(180)

STOP_TIMEOUT_S = 6
SHORT_STOP = {"TRACEBUS_STOP_TIMEOUT_S": str(STOP_TIMEOUT_S), "TRACEBUS_DRAIN_TIMEOUT_S": "2"}


def test_the_stop_timeout_must_outlast_the_drain() -> None:
    refusal = re.escape("stop_timeout_s (30) must exceed drain_timeout_s (30)")
    with pytest.raises(ValidationError, match=refusal):
        GroupSettings(stop_timeout_s=30, drain_timeout_s=30)


def stops_in_time(worker: CliWorker) -> None:
    """Sent SIGTERM, `worker` exits by its stop timeout (with a margin for the interpreter's
    start-up of the clock) with code 5, and says why in its log, which the Kafka client's
    retries (~10 records a second each) did not bury."""
    worker.process.send_signal(signal.SIGTERM)
    try:
        code = worker.process.wait(STOP_TIMEOUT_S + 10)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker's stop outlasted its timeout") from None
    assert code == ExitCode.STOP_TIMED_OUT, worker.log_tail()
    log = worker.log_path.read_text().splitlines()
    reason = f"level=ERROR logger=tracebus.stopping the stop took more than {STOP_TIMEOUT_S} s"
    assert any(reason in line for line in log), worker.log_tail()
    retries = [line for line in log if "logger=aiokafka" in line]
    assert len(retries) < 20, "\n".join(retries[:40])


def test_a_stream_worker_whose_documents_the_broker_keeps_refusing_stops_in_time(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path
) -> None:
    """A retriable refusal (the partition's leader moved) is retried by the producer for 20
    minutes; the stop does not wait for it, and the next worker publishes the trace."""
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers)
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    worker = WorkerProcess(settings, tmp_path, **SHORT_STOP)
    try:
        before = send_trace(client, "before")
        read_documents(settings, of_traces({before}))
        refused = NotLeaderForPartitionError.errno
        with proxy.refuse(lambda topic: topic == settings.traces_topic, refused) as refusal:
            during = send_trace(client, "during")
            eventually(lambda: refusal.partitions > 0, 30, "the document refused")
            stops_in_time(worker)
        worker = WorkerProcess(settings, tmp_path, **SHORT_STOP)
        documents = read_documents(settings, of_traces({before, during}))
    finally:
        client.close()
        worker.stop()
    assert {d.trace.name for d in documents} == {"before", "during"}


def test_a_sink_cut_off_from_the_broker_stops_in_time_and_the_next_delivers_every_trace(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path
) -> None:
    """Cut off, its commit and its leaving the group would wait for the coordinator forever."""
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers)
    out = tmp_path / "out"

    def written() -> set[str]:
        return {
            json.loads(line)["trace"]["name"]
            for path in out.glob("*.jsonl")
            for line in path.read_text().splitlines()
        }

    first, then = [f"first-{i}" for i in range(5)], [f"then-{i}" for i in range(5)]
    publish(settings, [document(name) for name in first])
    worker = SinkProcess("jsonl", settings, tmp_path, TRACEBUS_JSONL_DIR=str(out), **SHORT_STOP)
    try:
        eventually(lambda: written() == set(first), 60, "the first traces written")
        with proxy.cut(worker_clients):
            stops_in_time(worker)
        publish(settings, [document(name) for name in then])
        worker = SinkProcess("jsonl", settings, tmp_path, TRACEBUS_JSONL_DIR=str(out), **SHORT_STOP)
        eventually(lambda: written() == {*first, *then}, 60, "every trace written")
    finally:
        worker.stop()
