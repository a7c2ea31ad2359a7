"""Reading chosen offset ranges of one topic outside any consumer group (nothing is committed)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from tracebus.kafka import describe_topics
from tracebus.kafka.connection import kafka_options

_POLL_MS = 200
_BATCH = 500
FETCH_WAIT_MS = 50


class MissingTopicError(LookupError):
    """The topic does not exist on the broker."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic} does not exist")
        self.topic = topic


@dataclass(frozen=True)
class OffsetBounds:
    """The offsets a partition holds now: from `start` (log start) up to `end` (exclusive)."""

    start: int
    end: int

    @property
    def count(self) -> int:
        return max(self.end - self.start, 0)


async def offset_bounds(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], probe_timeout: float = 1.0
) -> dict[TopicPartition, OffsetBounds]:
    """Log start and end of each partition. Reassigns `consumer` (a group-less one).

    Some Kafka-compatible brokers (tansu) answer the latest offset with the first offset of the
    last record batch + 1, not the last record's + 1: reading from just before that end finds
    the true one. With Apache Kafka this reads one record per partition and changes nothing."""
    starts = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    probed = [tp for tp in partitions if ends[tp] > starts[tp]]
    if probed:
        consumer.assign(probed)
        for tp in probed:
            consumer.seek(tp, ends[tp] - 1)
        unseen = set(probed)
        deadline = time.monotonic() + probe_timeout
        while unseen and time.monotonic() < deadline:
            batches = await consumer.getmany(*unseen, timeout_ms=_POLL_MS)
            unseen -= {tp for tp, records in batches.items() if records}
        for tp in probed:
            ends[tp] = max(ends[tp], await consumer.position(tp))
    return {tp: OffsetBounds(starts[tp], ends[tp]) for tp in partitions}


async def partition_count(bootstrap_servers: str, topic: str) -> int:
    """Partitions of `topic`; MissingTopicError when it does not exist (it is never created)."""
    (info,) = await describe_topics(bootstrap_servers, [topic])
    if info.partitions is None:
        raise MissingTopicError(topic)
    return info.partitions


class TopicReader:
    """`async with TopicReader(...) as reader`: bounds and ranges of the partitions of `topic`.

    Reads stop at an offset fixed by the caller, so records written meanwhile (for example dead
    letters of records just redriven) are never read in the same pass."""

    def __init__(self, bootstrap_servers: str, topic: str, idle_timeout: float = 10.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.idle_timeout = idle_timeout
        self.partitions: list[TopicPartition] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        count = await partition_count(self.bootstrap_servers, self.topic)
        self.partitions = [TopicPartition(self.topic, p) for p in range(count)]
        self._consumer = AIOKafkaConsumer(
            **kafka_options(self.bootstrap_servers),
            client_id="tracebus-ops",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A fetch waiting at the end for new records delays the next seek by as long.
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        await self._consumer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("TopicReader is used outside `async with`")
        return self._consumer

    async def bounds(self) -> dict[TopicPartition, OffsetBounds]:
        return await offset_bounds(self.consumer, self.partitions, min(self.idle_timeout, 1.0))

    async def read(
        self, partition: TopicPartition, start: int, stop: int
    ) -> AsyncIterator[ConsumerRecord]:
        """Records of `partition` from `start` up to `stop` (exclusive), in offset order.

        TimeoutError when the broker returns nothing for `idle_timeout` seconds before `stop`."""
        if start >= stop:
            return
        consumer = self.consumer
        consumer.assign([partition])
        consumer.seek(partition, start)
        deadline = time.monotonic() + self.idle_timeout
        while True:
            batches = await consumer.getmany(partition, timeout_ms=_POLL_MS, max_records=_BATCH)
            records = batches.get(partition, [])
            for record in records:
                if record.offset >= stop:
                    return
                yield record
            if records:
                deadline = time.monotonic() + self.idle_timeout
            # The position, not a record count: offsets can have gaps (compaction, markers).
            if await consumer.position(partition) >= stop:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.topic}[{partition.partition}] returned nothing for "
                    f"{self.idle_timeout:g}s at offset {await consumer.position(partition)}"
                )
