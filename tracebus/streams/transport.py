"""Faust's aiokafka transport, with two corrections so that no record is lost on rebalances on
any Kafka-compatible broker:

- **Changelog ends that hold.** Faust recovers a table by reading its changelog up to the end
  offset the broker reports, then stops. Some compatible brokers (tansu, the embedded broker)
  report the first offset of a partition's last record batch + 1, so recovery would drop the
  rest of that batch: the table writes of the last burst before a crash. The end is therefore
  probed by reading (see `tracebus.ops.topic_reader.offset_bounds`); with Apache Kafka the probe
  changes nothing.
- **Seeking back where nothing is committed.** Faust drops records it has fetched when its flow
  stops (a rebalance begins) and seeks every partition back to its committed offset to read
  them again. aiokafka's seek leaves a partition with no committed offset (or offset 0) where it
  is: past the dropped records, which nobody would then handle. Such a partition of a stream
  topic is sought to its log start, where the group would begin it (`auto_offset_reset` is
  earliest).

And one ordering: records of the transport's `first_topics` (the stream's control topic) are
handed out before any other fetched record. aiokafka hands out fetched records partition by
partition in the order they were fetched, so a control record waited behind every events record
fetched before it (up to 8 MiB per partition): ~7 s on a worker catching up on a backlog, every
trace it had published or given up held in memory meanwhile.

And a guard on commits: Faust commits offsets after flushing its producer, whether or not the
writes it flushed were accepted. A table write the broker refused for good (an authorisation
error, a topic whose message limit is below the worker's) would leave a trace in memory only,
its records committed: lost with the next restart; a refused dead letter would lose its record
at once. The worker reports such a refusal (`StreamTransport.refused_write`), and the consumer
then stops the worker instead of committing, so that whichever worker takes over reads those
records again.

And one setting Faust fixes: its consumer waits up to 1.5 s for a fetch to fill. Apache Kafka
answers as soon as records arrive; tansu answers only when the wait ends, so every control
record's round trip (and the end-to-end latency) took hundreds of milliseconds. A short wait
costs an idle worker a few fetch requests a second."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Set
from contextlib import asynccontextmanager
from typing import cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from tracebus.kafka.connection import kafka_options
from tracebus.kafka.groups import leave_on_stop
from tracebus.kafka.settings import FETCH_MAX_WAIT_MS
from tracebus.ops.topic_reader import offset_bounds

log = logging.getLogger("tracebus.stream")


class StreamConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read when the consumer starts (its fetcher is built then), and only as an attribute.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def on_thread_stop(self) -> None:
        if self._consumer is not None:
            leave_on_stop(self._consumer)
        await super().on_thread_stop()

    async def _fetch_records(
        self,
        consumer: AIOKafkaConsumer,
        active_partitions: Set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> RecordMap:
        first_topics = cast(StreamTransport, self.consumer.transport).first_topics
        first = {tp for tp in active_partitions or () if tp.topic in first_topics}
        if first:
            records = await super()._fetch_records(consumer, first, 0, max_records)
            if records:
                return records
        return await super()._fetch_records(consumer, active_partitions, timeout, max_records)


class StreamConsumer(faust_aiokafka.Consumer):
    _stop_on_refusal: asyncio.Future[None] | None = None

    def _new_consumer_thread(self) -> StreamConsumerThread:
        return StreamConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # Faust flushed the producer just before: every write has its answer, and one turn of
        # the loop runs the callbacks that report a refusal.
        await asyncio.sleep(0)
        transport = cast(StreamTransport, self.transport)
        if transport.refusal is None:
            return await super()._commit(offsets)
        if self._stop_on_refusal is None:
            log.critical(
                "a write the worker must not commit past was refused (%r): stopping without "
                "committing, so that the records behind it are read again",
                transport.refusal,
            )
            # A stop, not a crash: a crash ends the consumer's thread without leaving the group,
            # and the partitions would wait for the session timeout before another worker got
            # them. The stop's own commits come here too.
            worker = self.beacon.root.data if self.beacon.root is not None else self.app
            self._stop_on_refusal = asyncio.ensure_future(worker.stop())
        return False

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        if not partitions:
            return {}
        async with self._probe() as probe:
            bounds = await offset_bounds(probe, [_aiokafka_tp(tp) for tp in partitions])
        return {tp: bounds[_aiokafka_tp(tp)].end for tp in partitions}

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        uncommitted = sorted(
            tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)
        )
        if uncommitted:
            async with self._probe() as probe:
                starts = await probe.beginning_offsets([_aiokafka_tp(tp) for tp in uncommitted])
            log.info(
                "no committed offset: reading %s from the log start",
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in uncommitted),
            )
            for tp in uncommitted:
                await self.seek(tp, starts[_aiokafka_tp(tp)])
        return committed

    @asynccontextmanager
    async def _probe(self) -> AsyncIterator[AIOKafkaConsumer]:
        """A group-less consumer of its own: the group's one belongs to Faust's thread."""
        transport = self.transport
        servers = faust_aiokafka.server_list(transport.url, transport.default_port)
        probe = AIOKafkaConsumer(**kafka_options(servers), enable_auto_commit=False)
        await probe.start()
        try:
            yield probe
        finally:
            await probe.stop()


class StreamTransport(faust_aiokafka.Transport):
    Consumer = StreamConsumer
    first_topics: frozenset[str] = frozenset()
    # The first table write or dead letter the broker refused, if any: nothing is committed
    # after it.
    refusal: BaseException | None = None

    def refused_write(self, error: BaseException) -> None:
        if self.refusal is None:
            self.refusal = error


def _aiokafka_tp(tp: TP) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)
