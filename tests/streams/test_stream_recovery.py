"""Several real workers share the partitions; a SIGKILLed worker loses no trace."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import TopicAuthorizationFailedError
from conftest import eventually, fresh_settings
from kafka_proxy import KafkaProxy
from stream_helpers import (
    WorkerProcess,
    metric,
    of_traces,
    read_documents,
    send_raw,
    send_trace,
)
from whereabouts import group_status, stream_app_id, whereabouts, whole_topic

import tracebus
from tracebus.config import KafkaSettings
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

        open_roots = start_open_traces(client, 30)
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
        try:
            documents = read_documents(settings, of_traces(expected), timeout=150)
        except AssertionError:
            raise AssertionError(asyncio.run(never_published(settings, expected))) from None
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


def test_a_restarted_worker_recovers_every_open_trace_of_a_burst(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A burst's table writes share the changelog's record batches; a broker may report a
    partition's end as the first offset of its last batch (tansu does). Recovery reads to the
    true end all the same, so no trace of the burst is lost with the worker."""
    settings = fresh_settings(broker.bootstrap_servers)
    ports = [free_port(), free_port()]
    # The traces stay open across the restart: no idle timeout cuts them short.
    env = {"TRACEBUS_IDLE_TIMEOUT_S": "120"}
    worker = WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(ports[0]), **env)
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    restarted = None
    try:
        open_roots = start_open_traces(client, 30)
        eventually(
            lambda: metric(ports[0], "tracebus_stream_open_traces") == 30,
            30,
            "the worker to hold the open traces",
        )
        eventually(
            lambda: asyncio.run(uncommitted(settings)) == 0,
            30,
            "the worker to commit every record it read, so that only the changelog has them",
        )
        worker.kill()

        restarted = WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(ports[1]), **env)
        eventually(
            lambda: metric(ports[1], "tracebus_stream_open_traces") == 30,
            60,
            "the restarted worker to recover every open trace",
        )
        for root in open_roots:
            root.end()
        assert client.flush(10)
        documents = read_documents(settings, of_traces({r.trace_id for r in open_roots}), 60)
    finally:
        client.close()
        worker.stop()
        if restarted is not None:
            restarted.stop()

    for document in documents:
        names = sorted(o.name for o in document.observations)
        assert names == sorted(["done-before-the-crash", document.trace.name])
        assert document.completed_by == "root_ended"


def start_open_traces(client: tracebus.Client, count: int) -> list[tracebus.Observation]:
    """`count` traces whose root is open and whose one child has ended, sent to the broker."""
    roots = []
    for i in range(count):
        root = client.trace(f"open-{i}")
        with client.span("done-before-the-crash", parent=root):
            pass
        roots.append(root)
    assert client.flush(10)
    return roots


async def uncommitted(settings: KafkaSettings) -> int:
    """Records of the events topic the stream's consumer group has not committed."""
    return (await group_status(settings, stream_app_id(settings))).lag


async def never_published(settings: KafkaSettings, expected: set[str]) -> str:
    """Where the expected traces that were not published are in the events topic."""
    published = {r.key.decode() for r in await whole_topic(settings, settings.traces_topic)}
    return await whereabouts(settings, expected - published, [stream_app_id(settings)])


def test_a_long_running_traces_bookkeeping_fits_changelog_messages_and_survives_a_restart(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A running trace published in parts keeps, per observation published, where it sat in
    the tree, and every event id it saw: past a message's size these are written in chunks
    (the embedded broker takes any size; Kafka refuses what exceeds message.max.bytes)."""
    settings = fresh_settings(broker.bootstrap_servers)
    limit = 65_536
    env = {
        "TRACEBUS_MAX_DOCUMENT_BYTES": str(limit),
        "TRACEBUS_MAX_OBSERVATIONS": "500",
        "TRACEBUS_IDLE_TIMEOUT_S": "120",
    }
    spans = 3_000
    port = free_port()
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    restarted = None
    worker = WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(port), **env)
    try:
        root = client.trace("long-running")
        steps = []
        for i in range(spans):
            with client.span(f"step-{i}", parent=root) as step:
                steps.append(step)
        assert client.flush(10)
        read_documents(settings, lambda ds: sum(len(d.observations) for d in ds) >= spans - 500)
        eventually(
            lambda: metric(port, "tracebus_stream_publishing_traces") == 0,
            30,
            "the worker to apply the acknowledgement of every part",
        )
        assert worker.stop() == 0, worker.log_tail()

        restarted = WorkerProcess(settings, tmp_path, **env)
        [first_record] = asyncio.run(records_of(settings, root.trace_id))[:1]
        send_raw(settings, [(first_record.key, first_record.value)])
        with client.span("late-child", parent=steps[0]):
            pass
        root.end()
        assert client.flush(10)
        documents = read_documents(settings, of_traces({root.trace_id}), 90)
    finally:
        client.close()
        worker.stop()
        if restarted is not None:
            assert restarted.stop() == 0, restarted.log_tail()
    changelog = asyncio.run(whole_topic(settings, f"{stream_app_id(settings)}-traces-changelog"))
    assert max(len(r.value or b"") for r in changelog) <= limit
    assert any(b"/chunk/" in r.key for r in changelog), "values over the limit were chunked"

    assert {d.revision for d in documents} == {1}
    names = Counter(o.name for d in documents for o in d.observations)
    assert set(names.values()) == {1}, "an observation was published twice"
    assert len(names) == 1 + spans + 1
    [(document, late)] = [
        (d, o) for d in documents for o in d.observations if o.name == "late-child"
    ]
    assert late.flags == []  # its parent, published before the restart, is known
    assert steps[0].id in {a.observation_id for a in document.ancestors}


async def records_of(settings: KafkaSettings, trace_id: str) -> list[ConsumerRecord]:
    return [
        r for r in await whole_topic(settings, settings.events_topic) if r.key == trace_id.encode()
    ]


def test_a_restarted_worker_closes_thousands_of_overdue_traces_in_records_that_fit(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Every trace a worker recovers past its late window is due at its first tick: the
    `close` commands for a partition go in several records, none over a document's size."""
    settings = fresh_settings(broker.bootstrap_servers, partitions=1)
    limit, traces = 65_536, 2_500
    port = free_port()
    env = {"TRACEBUS_MAX_DOCUMENT_BYTES": str(limit), "TRACEBUS_GRACE_S": "0"}
    worker = WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(port), **env)
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    restarted = None
    try:
        for i in range(traces):
            with client.trace(f"t-{i}"):
                pass
        assert client.flush(10)
        read_documents(settings, lambda documents: len(documents) >= traces, 90)
        eventually(
            lambda: metric(port, "tracebus_stream_publishing_traces") == 0,
            30,
            "the worker to apply every acknowledgement",
        )
        assert worker.stop() == 0, worker.log_tail()

        restarted = WorkerProcess(settings, tmp_path, TRACEBUS_LATE_WINDOW_S="0", **env)
        changelog = f"{stream_app_id(settings)}-traces-changelog"
        eventually(
            lambda: len(asyncio.run(forgotten(settings, changelog))) >= traces,
            60,
            "the restarted worker to forget every trace",
        )
    finally:
        client.close()
        worker.stop()
        if restarted is not None:
            assert restarted.stop() == 0, restarted.log_tail()
    # Deadline closes go in the events partition, behind the events the log held.
    events = asyncio.run(whole_topic(settings, settings.events_topic))
    closes = [r for r in events if dict(r.headers).get("tracebus-control") == b"close"]
    assert max(len(r.value) for r in closes) <= limit
    assert sum(len(orjson.loads(r.value)["traces"]) for r in closes) >= traces


async def forgotten(settings: KafkaSettings, changelog: str) -> set[bytes]:
    """The trace ids whose status mark the changelog has deleted."""
    return {
        r.key
        for r in await whole_topic(settings, changelog)
        if r.value is None and len(r.key) == 32
    }


def test_a_stopped_worker_publishes_what_it_has_queued_and_the_next_one_publishes_none_again(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path
) -> None:
    """A worker asked to stop while a trace waits to be published (here: the traces topic
    refuses writes for a while) sends it and its acknowledgement before it leaves, so the
    worker taking over does not publish it again as a higher revision."""
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers, partitions=1)
    port = free_port()
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    worker = WorkerProcess(settings, tmp_path)
    successor = None
    try:
        with proxy.refuse(
            lambda topic: topic == settings.traces_topic, TopicAuthorizationFailedError.errno
        ):
            send_trace(client, "refused-for-a-while")
            eventually(
                lambda: "was not sent, retrying" in worker.log_path.read_text(),
                30,
                "the worker to retry the refused document",
            )
            worker.process.send_signal(signal.SIGTERM)
            eventually(
                lambda: "queued for publication: 1; publishing them" in worker.log_path.read_text(),
                30,
                "the stopping worker to wait for its publications",
            )
        assert worker.process.wait(30) == 0, worker.log_tail()

        successor = WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(port))
        eventually(
            lambda: metric(port, "tracebus_stream_held_bytes") > 0,
            60,
            "the next worker to hold the published trace for its late window",
        )
        after = send_trace(client, "after")
        documents = read_documents(settings, lambda ds: any(d.trace_id == after for d in ds))
    finally:
        client.close()
        worker.stop()
        if successor is not None:
            successor.stop()
    published = sorted((d.trace.name, d.revision) for d in documents)
    assert published == [("after", 1), ("refused-for-a-while", 1)]


def test_traces_a_worker_was_publishing_when_their_partitions_moved_are_no_longer_its_own(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path
) -> None:
    """A worker whose partitions move while it cannot publish their traces (the traces topic
    refuses writes for longer than the handover waits) still sends them later, but their
    acknowledgements go to the new owner: the worker stops counting them as its own
    (`tracebus_stream_publishing_traces`) once the partitions have moved."""
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers, partitions=4)
    ports = [free_port(), free_port()]
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    workers = [WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(ports[0]))]
    try:
        with proxy.refuse(
            lambda topic: topic == settings.traces_topic, TopicAuthorizationFailedError.errno
        ):
            trace_ids = {send_trace(client, f"t-{i}") for i in range(8)}
            eventually(
                lambda: metric(ports[0], "tracebus_stream_publishing_traces") == len(trace_ids),
                30,
                "the first worker to be publishing every trace",
            )
            workers.append(WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(ports[1])))
            eventually(
                lambda: "recovered" in workers[1].log_path.read_text(),
                60,
                "the second worker to take its share of the partitions",
            )
        read_documents(settings, of_traces(trace_ids))
        eventually(
            lambda: [metric(p, "tracebus_stream_publishing_traces") for p in ports] == [0, 0],
            30,
            "both workers to count no trace as being published",
        )
    finally:
        client.close()
        for worker in workers:
            worker.stop()


def test_a_worker_publishes_what_it_has_queued_before_its_partitions_move(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path
) -> None:
    """When a worker joins, the others hand over partitions only once the traces they had
    queued for publication went out with their acknowledgements: the new owner publishes none
    of them again as a higher revision."""
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers, partitions=4)
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    port = free_port()
    workers = [WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(port))]
    try:
        with proxy.refuse(
            lambda topic: topic == settings.traces_topic, TopicAuthorizationFailedError.errno
        ):
            trace_ids = {send_trace(client, f"t-{i}") for i in range(8)}
            eventually(
                lambda: metric(port, "tracebus_stream_publishing_traces") == len(trace_ids),
                30,
                "the first worker to be publishing every trace",
            )
            workers.append(WorkerProcess(settings, tmp_path))
            eventually(
                lambda: "publishing them before handing over" in workers[0].log_path.read_text(),
                60,
                "the first worker to publish its queue before the partitions move",
            )
        eventually(
            lambda: "recovered" in workers[1].log_path.read_text(),
            60,
            "the second worker to take its share of the partitions",
        )
        after = send_trace(client, "after")
        documents = read_documents(settings, of_traces(trace_ids | {after}))
    finally:
        client.close()
        for worker in workers:
            worker.stop()
    assert {d.revision for d in documents} == {1}
