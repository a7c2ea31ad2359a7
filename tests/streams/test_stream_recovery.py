"""Several real workers share the partitions; a SIGKILLed worker loses no trace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from conftest import eventually, fresh_settings
from stream_helpers import WorkerProcess, metric, of_traces, read_documents

import tracebus
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port
from tracebus.ops.groups import GroupStatus, group_statuses
from tracebus.ops.topic_reader import TopicReader


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
            raise AssertionError(asyncio.run(whereabouts(settings, expected))) from None
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


async def stream_group(settings: KafkaSettings) -> GroupStatus:
    """The stream's consumer group on the events topic: committed and end offsets."""
    app_id = f"stream-{settings.events_topic}"
    statuses = await group_statuses(settings, stream_app_id=app_id, extra_groups=[app_id])
    (status,) = [s for s in statuses if s.group == app_id]
    return status


async def uncommitted(settings: KafkaSettings) -> int:
    """Records of the events topic the stream's consumer group has not committed."""
    return (await stream_group(settings)).lag


async def whole_topic(settings: KafkaSettings, topic: str) -> list[ConsumerRecord]:
    async with TopicReader(settings.bootstrap_servers, topic) as reader:
        bounds = await reader.bounds()
        return [r for tp, b in bounds.items() async for r in reader.read(tp, b.start, b.end)]


async def whereabouts(settings: KafkaSettings, expected: set[str]) -> str:
    """Where the expected traces that were not published are in the events topic, against what
    the stream's group committed: what a failure needs to tell a lost record from a stuck one."""
    published = {r.key.decode() for r in await whole_topic(settings, settings.traces_topic)}
    events = await whole_topic(settings, settings.events_topic)
    missing = expected - published
    lines = [f"{len(missing)} of {len(expected)} traces never published"]
    for p in (await stream_group(settings)).partitions:
        found = [
            f"{r.offset}:{r.key.decode()[:8]}"
            for r in events
            if r.partition == p.partition and r.key.decode() in missing
        ]
        lines.append(
            f"events partition {p.partition}: committed {p.committed}, end {p.bounds.end}; "
            f"records of missing traces {found}"
        )
    return "\n".join(lines)
