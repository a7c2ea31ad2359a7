"""Records the consumer skips (Faust drops some around a rebalance) are read and handled when
the gap shows, so a commit over the gap loses nothing; a partition whose records stop reaching
the agent is woken, so that the gap shows even when no later record comes."""

from __future__ import annotations

import asyncio

from faust.types import TP
from ops.ops_helpers import write_records

from tracebus.config import KafkaSettings
from tracebus.streams.app import _STALL_S, StreamWorker, control_topic
from tracebus.streams.pricing import PriceBook
from tracebus.streams.settings import StreamSettings


class Arrived:
    """A record as the agent receives it."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key = None
        self.value = b""
        self.headers: list[tuple[str, bytes]] = []


def test_a_gap_in_a_partition_is_read_from_the_broker_and_nothing_else(
    kafka: KafkaSettings,
) -> None:
    write_records(kafka.bootstrap_servers, kafka.events_topic, {2: 6})  # r0 to r5
    worker = StreamWorker(StreamSettings(**kafka.model_dump()), PriceBook())

    async def arrive(*offsets: int) -> list[list[bytes]]:
        read = []
        for offset in offsets:
            gap = worker._gap_before(Arrived(kafka.events_topic, 2, offset))
            skipped = worker._skipped_records(kafka.events_topic, 2, gap)
            read.append([r.value async for r in skipped] if gap else [])
        return read

    # 0 and 1 in order, then 5: 2 to 4 were skipped; 3 again later (a re-delivery) is no gap.
    assert asyncio.run(arrive(0, 1, 5, 3)) == [[], [], [b"r2", b"r3", b"r4"], []]
    assert worker.metrics.registry.get_sample_value("tracebus_stream_skipped_records_total") == 3


def test_a_partition_with_records_past_its_next_offset_and_none_handled_for_a_while_is_stalled(
    kafka: KafkaSettings,
) -> None:
    settings = StreamSettings(**kafka.model_dump())
    worker = StreamWorker(settings, PriceBook())
    events, control = (TP(kafka.events_topic, p) for p in (0, 1))
    idle, unfetched = TP(control_topic(settings), 0), TP(kafka.events_topic, 2)
    for tp, offset in ((events, 4), (control, 2), (unfetched, 6), (idle, 0)):
        worker._gap_before(Arrived(tp.topic, tp.partition, offset))
    moved = max(worker._moved_at.values())
    # Ends as last fetched: events[0] and control[1] have records past their next offset,
    # the idle one has none, and one was never fetched.
    ends = {events: 9, control: 5, idle: 1, unfetched: None}

    assert worker._stalled(ends, moved + _STALL_S / 2) == [], "a busy agent is no stall"
    assert worker._stalled(ends, moved + _STALL_S) == [events, control]
    worker._gap_before(Arrived(events.topic, events.partition, 5))
    assert worker._stalled(ends, moved + _STALL_S) == [control], "a record handled is progress"
