"""Records the consumer skips (Faust drops some around a rebalance) are read and handled when
the gap shows, so a commit over the gap loses nothing."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from tracebus.config import KafkaSettings
from tracebus.streams.app import StreamWorker
from tracebus.streams.pricing import PriceBook
from tracebus.streams.settings import StreamSettings


def send_to_partition(kafka: KafkaSettings, values: list[bytes], partition: int) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(kafka.events_topic, value, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(send())


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
    send_to_partition(kafka, [b"r%d" % i for i in range(6)], partition=2)
    worker = StreamWorker(StreamSettings(**kafka.model_dump()), PriceBook())

    async def arrive(*offsets: int) -> list[list[bytes]]:
        return [
            [r.value async for r in worker._skipped_records(Arrived(kafka.events_topic, 2, o))]
            for o in offsets
        ]

    # 0 and 1 in order, then 5: 2 to 4 were skipped; 3 again later (a re-delivery) is no gap.
    assert asyncio.run(arrive(0, 1, 5, 3)) == [[], [], [b"r2", b"r3", b"r4"], []]
    assert worker.metrics.registry.get_sample_value("tracebus_stream_skipped_records_total") == 3
