"""The delivery runtime every sink shares: Kafka consumer group → batches → one destination.

Offsets are committed per partition only up to the highest contiguous record delivered or
dead-lettered, so a crash or an outage re-delivers (idempotently) instead of losing. While the
destination fails, reading pauses and the batch is retried with exponential back-off and jitter
(never sooner than Retry-After). A batch the destination rejects as a whole is bisected until the
offending trace is found; only that one is dead-lettered, with the response.

A runtime delivers the traces of one route (`tracebus.sinks.routing`): a sink with a routes
file runs one per route, side by side (`run_together`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from tracebus.kafka.connection import kafka_options
from tracebus.kafka.groups import leave_on_stop
from tracebus.kafka.settings import FETCH_MAX_WAIT_MS
from tracebus.observability import Heartbeat
from tracebus.ops.deadletters import (
    ONLY_SINK_HEADER,
    REASON_HEADER,
    RESPONSE_HEADER,
    SINK_STAGE_PREFIX,
    SOURCE_HEADER,
    STAGE_HEADER,
    STATUS_HEADER,
)
from tracebus.ops.groups import admin_client, committed_offsets
from tracebus.schemas import (
    PROJECT_HEADER,
    SchemaError,
    TraceDocument,
    decode_document,
    record_project,
)
from tracebus.sinks.exporter import Exporter, ExportError
from tracebus.sinks.metrics import SinkMetricFamilies, SinkMetrics
from tracebus.sinks.offsets import PartitionOffsets
from tracebus.sinks.routing import EVERY_TRACE, Route
from tracebus.sinks.settings import SinkSettings

log = logging.getLogger("tracebus.sink")
_DELIVERED_MEMORY = 100_000


@dataclass(frozen=True)
class ReplayRange:
    """Offsets to re-deliver: from `start` (inclusive) to `end` (exclusive), per partition."""

    start: dict[TopicPartition, int]
    end: dict[TopicPartition, int]
    # Record timestamps (ms) bounding the range; offsets from a time lookup can be coarse.
    since_ms: int | None = None
    until_ms: int | None = None

    def excludes(self, timestamp_ms: int) -> bool:
        return (self.since_ms is not None and timestamp_ms < self.since_ms) or (
            self.until_ms is not None and timestamp_ms >= self.until_ms
        )

    @property
    def total(self) -> int:
        return sum(max(self.end[p] - self.start.get(p, 0), 0) for p in self.end)


@dataclass
class DeliveryCounts:
    delivered: int = 0
    superseded: int = 0
    retries: int = 0
    dead_lettered: int = 0


@dataclass(slots=True)
class Letter:
    """A record of the traces topic on its way to the dead-letter topic."""

    partition: TopicPartition
    offset: int
    key: bytes | None
    value: bytes
    project: str | None


@dataclass(slots=True)
class Item:
    """One record of the traces topic on its way to the destination."""

    partition: TopicPartition
    offset: int
    key: bytes | None
    value: bytes
    document: TraceDocument


class DeliveryRuntime:
    def __init__(
        self,
        exporter: Exporter,
        settings: SinkSettings,
        metric_families: SinkMetricFamilies | None = None,
        replay: ReplayRange | None = None,
        route: Route = EVERY_TRACE,
    ) -> None:
        self.exporter = exporter
        self.replay = replay
        self.route = route
        self.group = route.group(settings.group(exporter.name))
        # Who this runtime is, in the log.
        self.label = exporter.name + (f" (project {route.project})" if route.project else "")
        self.counts = DeliveryCounts()
        self.heartbeat = Heartbeat()
        self.settings = settings
        self.metrics = SinkMetrics(exporter.name, metric_families, route.project or "")
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._pending: list[Item] = []
        self._oldest_pending = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight_traces: set[str] = set()
        # Highest revision delivered per trace, so a replayed lower revision never overwrites.
        self._delivered: OrderedDict[str, int] = OrderedDict()
        self._failing = False
        # Back-off is the destination's, not the batch's: no request goes out before this.
        self._not_before = 0.0
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            **kafka_options(s.bootstrap_servers),
            group_id=self.group,
            client_id=f"tracebus-sink-{self.exporter.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=10_000,
            max_poll_records=s.batch_max_traces * 2,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._producer = AIOKafkaProducer(**kafka_options(s.bootstrap_servers), acks="all")
        await self._producer.start()
        if self.replay is None and self.route.project is not None:
            await self._start_where_the_sink_is()
        if self.replay is None:
            self._consumer.subscribe([s.traces_topic], listener=_Rebalance(self))
            await self._consumer.start()
            leave_on_stop(self._consumer)
        else:
            await self._consumer.start()
            self._consumer.assign(list(self.replay.end))
            for partition in self.replay.end:
                self._consumer.seek(partition, self.replay.start.get(partition, 0))
        log.info("sink %s reading %s as group %s", self.label, s.traces_topic, self.group)
        try:
            while not stop.is_set() and not self._replayed():
                self.heartbeat.beat()
                await self._read_once()
                self._dispatch(force=False)
                await self._commit()
            await self._drain()
        finally:
            await self._consumer.stop()
            await self._producer.stop()
            await self.exporter.close()

    async def _start_where_the_sink_is(self) -> None:
        """Commit, for this route's group, the sink's own group's offsets on the partitions it
        has committed nothing on: a new route starts where the sink is, instead of delivering
        the whole topic again (the traces before it went to the sink's own destination, and
        `tracebus replay` re-delivers them to the route's). Done before joining, as a consumer
        reads from its committed offsets as soon as it has partitions."""
        s = self.settings
        sink_group = s.group(self.exporter.name)
        seeder = AIOKafkaConsumer(
            **kafka_options(s.bootstrap_servers),
            group_id=self.group,
            client_id=f"tracebus-sink-{self.exporter.name}",
            enable_auto_commit=False,
        )
        await seeder.start()
        try:
            await seeder.topics()
            numbers = seeder.partitions_for_topic(s.traces_topic) or set()
            partitions = [TopicPartition(s.traces_topic, n) for n in sorted(numbers)]
            async with admin_client(s.bootstrap_servers) as admin:
                own = await committed_offsets(admin, self.group, partitions)
                sinks = await committed_offsets(admin, sink_group, partitions)
            starts = {
                tp: offset for tp, offset in sinks.items() if offset is not None and own[tp] is None
            }
            if starts:
                seeder.assign(list(starts))
                await seeder.commit(starts)
                log.info(
                    "%s starts partitions %s where group %s is",
                    self.label,
                    sorted(tp.partition for tp in starts),
                    sink_group,
                )
        except KafkaError as error:
            # Another member of this route's group got there first: its offsets stand.
            log.info("%s keeps its group's offsets: %r", self.label, error)
        finally:
            await seeder.stop()

    async def _read_once(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        full = len(self._pending) >= self.settings.max_pending
        if assignment:
            if full or self._failing:
                consumer.pause(*assignment)
            else:
                consumer.resume(*assignment)
        wait_ms = int(min(self.settings.linger_ms, 100)) or 1
        batches = await consumer.getmany(timeout_ms=wait_ms, max_records=self.settings.max_pending)
        for partition, records in batches.items():
            tracker = self._offsets.setdefault(partition, PartitionOffsets())
            end = self.replay.end.get(partition) if self.replay is not None else None
            for record in records:
                if end is not None and record.offset >= end:
                    consumer.pause(partition)  # past the replayed range
                    break
                tracker.taken(record.offset)
                self.metrics.records.inc()
                if self.replay is not None and self.replay.excludes(record.timestamp):
                    tracker.done(record.offset)
                    continue
                await self._accept(partition, record)
        self.metrics.pending.set(len(self._pending))
        # A rebalance during the awaits above or below may revoke partitions; aiokafka asserts
        # that a partition is assigned before giving its highwater, which must not end the sink.
        assignment = consumer.assignment()
        if assignment:
            lag = 0
            for partition in assignment:
                with contextlib.suppress(Exception):
                    highwater = consumer.highwater(partition)
                    if highwater is not None:
                        lag += max(highwater - await consumer.position(partition), 0)
            self.metrics.lag.set(lag)

    def replayed_records(self) -> int:
        """How much of the replay range is done, in records."""
        if self.replay is None:
            return 0
        return sum(
            max(min(t.last_done + 1, self.replay.end[p]) - self.replay.start.get(p, 0), 0)
            for p, t in self._offsets.items()
            if t.last_done is not None and p in self.replay.end
        )

    def _replayed(self) -> bool:
        """A replay is over once every record of its range is done."""
        if self.replay is None or self._pending or self._tasks:
            return False
        return all(
            t.pending == 0 and t.last_done is not None and t.last_done + 1 >= self.replay.end[p]
            for p, t in self._offsets.items()
        ) and all(
            p in self._offsets or self.replay.end[p] <= self.replay.start.get(p, 0)
            for p in self.replay.end
        )

    async def _accept(self, partition: TopicPartition, record: ConsumerRecord) -> None:
        headers = dict(record.headers or ())
        only = headers.get(ONLY_SINK_HEADER)
        stamped = _stamped_project(headers.get(PROJECT_HEADER))
        if (only is not None and only.decode() != self.exporter.name) or (
            stamped is not None and not self.route.takes(stamped)
        ):
            # Re-driven for another destination only, or another route's.
            self._offsets[partition].done(record.offset)
            return
        try:
            document = decode_document(record.value)
        except SchemaError as error:
            if stamped is None and not self.route.takes_the_rest:
                self._offsets[partition].done(record.offset)
                return
            await self._dead_letter_records(
                [Letter(partition, record.offset, record.key, record.value, stamped)],
                f"not a trace document: {error}",
                "invalid",
            )
            return
        if stamped is None and not self.route.takes(document.project):
            # Written without the header (before the stream stamped it): the document tells.
            self._offsets[partition].done(record.offset)
            return
        if not self._pending:
            self._oldest_pending = time.monotonic()
        self._pending.append(Item(partition, record.offset, record.key, record.value, document))

    # -- batching -----------------------------------------------------------------------------

    def _dispatch(self, force: bool) -> None:
        s = self.settings
        while self._pending and not self._failing and not self._slots.locked():
            age_ms = (time.monotonic() - self._oldest_pending) * 1000
            ready = (
                force
                or len(self._pending) >= s.batch_max_traces
                or sum(len(i.value) for i in self._pending) >= s.batch_max_bytes
                or age_ms >= s.linger_ms
            )
            if not ready:
                return
            batch = self._take_batch()
            if not batch:
                return
            task = asyncio.create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take_batch(self) -> list[Item]:
        """Up to the limits, skipping traces already in flight so revisions stay in order."""
        s = self.settings
        batch: list[Item] = []
        rest: list[Item] = []
        size = 0
        traces: set[str] = set()
        for item in self._pending:
            trace_id = item.document.trace_id
            fits = len(batch) < s.batch_max_traces and (
                not batch or size + len(item.value) <= s.batch_max_bytes
            )
            if fits and (trace_id not in self._in_flight_traces or trace_id in traces):
                batch.append(item)
                size += len(item.value)
                traces.add(trace_id)
            else:
                rest.append(item)
        self._pending = rest
        self._oldest_pending = time.monotonic()
        self._in_flight_traces |= traces
        return batch

    async def _deliver(self, batch: list[Item]) -> None:
        async with self._slots:
            try:
                current = self._supersede(batch)
                if current:
                    await self._export(current, time.monotonic())
            finally:
                for item in batch:
                    self._offsets.get(item.partition, PartitionOffsets()).done(item.offset)
                self._in_flight_traces -= {i.document.trace_id for i in batch}

    def _supersede(self, batch: list[Item]) -> list[Item]:
        """Drop documents whose trace has a higher revision here or already delivered."""
        newest: dict[str, int] = {}
        for item in batch:
            d = item.document
            newest[d.trace_id] = max(newest.get(d.trace_id, 0), d.revision)
        current = []
        for item in batch:
            d = item.document
            if d.revision < max(newest[d.trace_id], self._delivered.get(d.trace_id, 0)):
                self.metrics.superseded.inc()
                self.counts.superseded += 1
            else:
                current.append(item)
        return current

    async def _export(self, items: list[Item], started: float) -> None:
        s = self.settings
        attempt = 0
        while True:
            wait = self._not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                with self.metrics.latency.time():
                    await self.exporter.export([i.document for i in items])
            except ExportError as error:
                if error.retryable:
                    elapsed = time.monotonic() - started
                    if s.retry_max_elapsed_s and elapsed >= s.retry_max_elapsed_s:
                        # The next batch gets its own full retry budget.
                        self._set_failing(False)
                        await self._dead_letter(
                            items, f"gave up after {elapsed:.0f}s: {error}", "gave_up", error
                        )
                        return
                    delay = min(s.retry_max_s, s.retry_initial_s * 2**attempt)
                    delay = max(delay * random.uniform(0.5, 1.0), error.retry_after or 0.0)
                    self._set_failing(True, error, delay)
                    self.metrics.retries.inc()
                    self.counts.retries += 1
                    attempt += 1
                    self._not_before = max(self._not_before, time.monotonic() + delay)
                    continue
                self._set_failing(False)
                if error.whole_batch and len(items) > 1:
                    middle = len(items) // 2
                    await self._export(items[:middle], started)
                    await self._export(items[middle:], started)
                    return
                await self._dead_letter(items, str(error), "rejected", error)
                return
            self._set_failing(False)
            self.metrics.delivered.inc(len(items))
            self.counts.delivered += len(items)
            self.metrics.batch_size.observe(len(items))
            for item in items:
                self._remember(item.document)
            return

    def _set_failing(
        self, failing: bool, error: ExportError | None = None, delay: float = 0
    ) -> None:
        if failing and not self._failing:
            log.warning(
                "%s is failing, reading paused, retrying in %.1fs: %s",
                self.label,
                delay,
                error,
            )
        elif not failing and self._failing:
            log.info("%s delivers again, reading resumed", self.label)
        self._failing = failing
        self.metrics.failing.set(1 if failing else 0)

    def _remember(self, document: TraceDocument) -> None:
        self._delivered[document.trace_id] = document.revision
        self._delivered.move_to_end(document.trace_id)
        if len(self._delivered) > _DELIVERED_MEMORY:
            self._delivered.popitem(last=False)

    # -- dead letters and offsets -------------------------------------------------------------

    async def _dead_letter(
        self, items: list[Item], reason: str, kind: str, error: ExportError | None
    ) -> None:
        await self._dead_letter_records(
            [Letter(i.partition, i.offset, i.key, i.value, i.document.project) for i in items],
            reason,
            kind,
            error,
        )

    async def _dead_letter_records(
        self,
        records: list[Letter],
        reason: str,
        kind: str,
        error: ExportError | None = None,
    ) -> None:
        assert self._producer is not None
        self.metrics.dead_letter(kind, len(records))
        self.counts.dead_lettered += len(records)
        log.warning(
            "dead-lettering %d record(s) for %s: %s", len(records), self.label, reason[:300]
        )
        headers = [
            (REASON_HEADER, reason.encode()),
            (STAGE_HEADER, f"{SINK_STAGE_PREFIX}{self.exporter.name}".encode()),
        ]
        if error is not None and error.status is not None:
            headers.append((STATUS_HEADER, str(error.status).encode()))
        if error is not None and error.response:
            headers.append((RESPONSE_HEADER, error.response[:4000].encode()))
        sends = []
        for letter in records:
            source = f"{letter.partition.topic}/{letter.partition.partition}/{letter.offset}"
            # The project goes along, so a redrive reaches the project's route again.
            project = [(PROJECT_HEADER, letter.project.encode())] if letter.project else []
            sends.append(
                await self._producer.send(
                    self.settings.dead_letter_topic,
                    letter.value,
                    key=letter.key,
                    headers=[*headers, (SOURCE_HEADER, source.encode()), *project],
                )
            )
        await asyncio.gather(*sends)
        for letter in records:
            self._offsets.get(letter.partition, PartitionOffsets()).done(letter.offset)

    async def _commit(self) -> None:
        assert self._consumer is not None
        offsets = {}
        for partition, tracker in self._offsets.items():
            position = tracker.committable()
            if position is not None:
                offsets[partition] = position
        if offsets:
            await self._consumer.commit(offsets)

    async def settle(self, partitions: set[TopicPartition], timeout: float) -> None:
        """Finish what is in flight for `partitions`, commit it, forget the rest (re-read later)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        await self._commit()
        self._pending = [i for i in self._pending if i.partition not in partitions]
        for partition in partitions:
            self._offsets.pop(partition, None)

    async def _drain(self) -> None:
        """On shutdown: deliver what was read, within the drain budget, then commit."""
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while (self._pending or self._tasks) and time.monotonic() < deadline:
            self._dispatch(force=True)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=max(deadline - time.monotonic(), 0))
        await self._commit()
        undelivered = len(self._pending) + len(self._tasks)
        if undelivered:
            log.warning(
                "%d documents not delivered at shutdown; they are read again on restart",
                undelivered,
            )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: DeliveryRuntime) -> None:
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runtime.settle(set(revoked), self.runtime.settings.drain_timeout_s)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("%s assigned %s", self.runtime.label, sorted(p.partition for p in assigned))


def _stamped_project(header: bytes | None) -> str | None:
    """The project a traces record's header names; None without one (the document tells)."""
    try:
        return record_project(header)
    except SchemaError:
        return None


async def run_together(runtimes: Sequence[DeliveryRuntime], stop: asyncio.Event) -> None:
    """Run the runtimes of a sink's routes until `stop`, or each to its end (a replay). One
    that fails stops the others, which drain and commit first, then its error is raised."""
    tasks = [asyncio.create_task(runtime.run(stop)) for runtime in runtimes]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    if any(task.done() and task.exception() for task in tasks):
        stop.set()
    await asyncio.gather(*tasks)
