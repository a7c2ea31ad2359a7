"""Writes the broker refuses for good (a topic's message limit, an ACL): the worker never
commits over a table write or a dead letter that was refused, and a document refused stops
nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from conftest import consume, eventually, fresh_settings
from kafka_proxy import KafkaProxy
from stream_helpers import (
    WorkerProcess,
    metric,
    of_traces,
    read_documents,
    send_raw,
    send_trace,
)
from whereabouts import group_status, stream_app_id

import tracebus
from tracebus.cli.common import ExitCode
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port
from tracebus.ops.deadletters import PUBLISH_STAGE, DeadLetter
from tracebus.ops.redrive import RedriveRequest, redrive_dead_letters

pytestmark = pytest.mark.timeout(180)


def committed(settings: KafkaSettings) -> tuple[int, int]:
    """The offsets the stream's group has committed on the events topic, and the topic's end
    offsets, each summed over the partitions."""
    status = asyncio.run(group_status(settings, stream_app_id(settings)))
    partitions = [p for p in status.partitions if p.topic == settings.events_topic]
    return sum(p.committed or 0 for p in partitions), sum(p.bounds.end for p in partitions)


def test_a_refused_table_write_stops_the_worker_uncommitted_and_the_next_one_publishes_it(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path
) -> None:
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers)
    changelog = f"{stream_app_id(settings)}-traces-changelog"
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    worker = WorkerProcess(settings, tmp_path)
    try:
        before = send_trace(client, "before")
        read_documents(settings, of_traces({before}))
        with stopped_by_refusal(proxy, settings, worker, changelog):
            during = send_trace(client, "during")
        worker = WorkerProcess(settings, tmp_path)
        documents = read_documents(settings, of_traces({before, during}))
    finally:
        client.close()
        worker.stop()
    published = sorted((d.trace.name, d.revision) for d in documents)
    assert published == [("before", 1), ("during", 1)]


def test_a_refused_dead_letter_stops_the_worker_uncommitted_and_the_next_one_writes_it(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path
) -> None:
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers)
    worker = WorkerProcess(settings, tmp_path)
    try:
        with stopped_by_refusal(proxy, settings, worker, settings.dead_letter_topic):
            send_raw(settings, [(b"bad", b"{not json")])
        worker = WorkerProcess(settings, tmp_path)
        [letter] = read_dead_letters(settings, at_least=1)
    finally:
        worker.stop()
    assert letter.value == b"{not json"
    assert "malformed JSON" in (letter.header("tracebus-reason") or "")


@contextlib.contextmanager
def stopped_by_refusal(
    proxy: KafkaProxy, settings: KafkaSettings, worker: WorkerProcess, topic: str
) -> Iterator[None]:
    """`topic` refuses writes while the block gives the worker something to write there, and
    until the worker stops: with exit code 4, having committed nothing since the block began,
    and out of its group (the next worker need not wait for its session to time out)."""
    # Everything so far (records, and the control records that closed their traces) committed.
    eventually(lambda: len(set(committed(settings))) == 1, 20, "the events committed")
    before, _ = committed(settings)
    with proxy.refuse(lambda refused: refused == topic, MessageSizeTooLargeError.errno):
        yield
        try:
            code = worker.process.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker went on after a refused write") from None
    assert code == ExitCode.WORKER_FAILED
    assert "must not commit past was refused" in worker.log_path.read_text()
    offsets, end = committed(settings)
    assert offsets == before < end, "the record behind the refused write was committed"
    assert asyncio.run(group_status(settings, stream_app_id(settings))).members == 0


# The traces topic's `max.message.bytes` in the next test, below TRACEBUS_MAX_DOCUMENT_BYTES.
TOPIC_LIMIT = 40_000


def test_documents_over_the_topic_limit_are_dead_lettered_and_those_under_it_all_get_through(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path
) -> None:
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers)
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    port = free_port()
    worker = WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(port))
    try:
        with proxy.refuse(
            lambda topic: topic == settings.traces_topic,
            MessageSizeTooLargeError.errno,
            larger_than=TOPIC_LIMIT,
        ) as refusal:
            # Parts of ~25 KB each, sent together in one batch the topic refuses.
            with client.trace("in-parts") as in_parts:
                for i in range(59):  # with the root, 3 parts of 20
                    with client.span(f"step-{i}", input="x" * 1200):
                        pass
            with client.trace("too-big") as too_big, client.span("huge", input="y" * 60_000):
                pass
            assert client.flush(10)
            letters = read_dead_letters(settings, at_least=1)
            read_documents(settings, of_traces({in_parts.trace_id}))
        assert refusal.partitions >= 2, "the parts' batch and the big document were refused"
        after = send_trace(client, "after")
        documents = read_documents(settings, of_traces({in_parts.trace_id, after}))
        assert worker.process.poll() is None
        assert metric(port, 'tracebus_stream_dead_letters_total{reason="refused"}') == 1
        assert metric(port, "tracebus_stream_traces_published_total") == 4  # not the big one
    finally:
        client.close()
        worker.stop()
    published = sorted((d.trace.name, d.part, d.parts) for d in documents)
    assert published == [("after", 1, 1), *[("in-parts", part, 3) for part in (1, 2, 3)]]
    [letter] = letters
    assert letter.stage == PUBLISH_STAGE and letter.key == too_big.trace_id.encode()
    assert "refused revision 1" in (letter.header("tracebus-reason") or "")
    assert b"y" * 60_000 in letter.value

    report = asyncio.run(redrive_dead_letters(settings, RedriveRequest(stage=PUBLISH_STAGE)))
    assert [r.topic for r in report.redriven] == [settings.traces_topic]
    redriven = [
        d
        for d in read_documents(settings, of_traces({too_big.trace_id}))
        if d.trace_id == too_big.trace_id
    ]
    assert [sorted(o.name for o in d.observations) for d in redriven] == [["huge", "too-big"]]


def read_dead_letters(settings: KafkaSettings, at_least: int) -> list[DeadLetter]:
    """At least `at_least` dead letters, read from the start (waiting up to a worker's takeover:
    start-up, group join, recovery)."""
    records = consume(
        settings.bootstrap_servers,
        settings.dead_letter_topic,
        lambda r: len(r) >= at_least,
        timeout=60,
    )
    return [DeadLetter.from_record(r) for r in records]
