"""The Faust stream worker: events → per-trace state → trace documents.

A worker keeps the states of its traces in memory (`assembly.TraceState`) and makes them
durable in a changelog-backed table of raw bytes, written as little as crash safety allows:

- `<trace id>/<partition>/<offset>/<received ns>`: each event record that added anything, its
  value as it arrived (no re-encoding; the table's memory store shares the bytes with the state);
- `<trace id>`: the trace's status mark (status, revision, what was published; no content),
  written when the status changes;
- `<trace id>/snapshot`: the content after a running trace published parts (what they carried
  is dropped), replacing its records.

A status mark or snapshot larger than a changelog message is written in chunks (`chunks.py`).

Recovery (`assembly.rebuild`) replays a trace's records in key order over its snapshot, then
applies its status mark. A trace's entries are deleted when it is forgotten after the late
window. The layout is not versioned (no users yet): a worker of another layout needs an empty
changelog, i.e. a new app id.

Publication protocol, so that a crash never loses a trace and never publishes the same revision
twice: the agent marks a trace `publishing` (revision r) in the table and queues its documents;
the publisher awaits the mark's changelog write (`_put`), sends the documents,
and on acknowledgement sends a `published` control record to the trace's partition, which the
agent applies. A worker that finds a trace still `publishing` after recovery cannot know
whether revision r went out, so it publishes r + 1; a worker that stops or hands over
partitions first lets its queue settle (`_settle_publications`), which leaves that to crashes.
Time-based decisions (grace, idle timeout, late window, memory bound) travel the same way as
`close` control records, because Faust only lets an agent processing that partition modify a
table key.

Control records go through one of two partitions the agent reads, by what their order must
respect. A grace, idle-timeout or late-window `close` is appended to the events partition, so
it acts only on a trace that has every event the log held before it: after a takeover, the
events a killed worker left unread complete their traces before any timeout can. Memory-bound
closes and `published` acknowledgements go through `<app id>-control`, a topic of the worker's
own read beside the events topic (Faust assigns partition p of both to the same worker), whose
records the consumer hands out before events records it fetched earlier (`transport.py`): in the
events topic they would queue behind a backlog, and a worker catching up after an outage would
hold every trace it read until it had read them all."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence, Set
from typing import Any, Protocol, cast

import faust
import orjson
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.structs import RecordMetadata
from faust.exceptions import NotReady
from faust.types import TP

from tracebus.kafka.connection import KafkaSecurity
from tracebus.observability import Heartbeat
from tracebus.ops.deadletters import (
    PUBLISH_STAGE,
    REASON_HEADER,
    SOURCE_HEADER,
    STAGE_HEADER,
    STREAM_STAGE,
)
from tracebus.ops.groups import admin_client, committed_offsets
from tracebus.ops.topic_reader import TopicReader
from tracebus.schemas import PROJECT_HEADER, Completion, SchemaError, record_project
from tracebus.stopping import StopDeadline
from tracebus.streams.assembly import (
    OPEN,
    PUBLISHED,
    PUBLISHING,
    Enrichment,
    Pricing,
    TraceState,
    apply_events,
    build_documents,
    deadline,
    forget_content,
    looks_complete,
    mark_published,
    materialize,
    rebuild,
    record_key,
    snapshot_key,
    status_key,
    too_big,
)
from tracebus.streams.chunks import chunk_partition, chunked, joined
from tracebus.streams.index import FORGET_NOW, MEMORY_BOUND, DeadlineIndex
from tracebus.streams.metrics import StreamMetrics
from tracebus.streams.publications import Publication, PublicationQueue
from tracebus.streams.settings import MAX_REQUEST_BYTES, StreamSettings
from tracebus.streams.transport import StreamTransport
from tracebus.streams.validation import parse_record

log = logging.getLogger("tracebus.stream")
CONTROL_HEADER = "tracebus-control"
CONTROL_KEY = b"tracebus-control"
_NS = 1_000_000_000
# The most JSON a control record takes per trace (its id, then a reason or a revision).
_CONTROL_ENTRY_BYTES = 64
_PUBLISH_RETRY_S = 1.0
# How a broker refuses a record batch larger than the topic's `max.message.bytes`.
_REFUSED_FOR_SIZE = (MessageSizeTooLargeError, RecordListTooLargeError)
# The agent waits while this many traces, or documents of this share of the memory bound, are
# queued for the publisher: read on, it would hold every trace it closed meanwhile (a worker
# reading a backlog closes them faster than they go), uncounted by the bound.
_MAX_QUEUED_PUBLICATIONS = 500
_QUEUED_SHARE_OF_BOUND = 1 / 4
# A `close` not acted on this long after it was sent is sent again.
_CLOSE_AGAIN_NS = 30 * _NS
# A partition with records past its next offset and none handled this long is woken (see
# `_wake_stalled`): far longer than records wait in Faust's buffers on a busy worker.
_STALL_S = 10.0
# A trace's record, changelog entry and document are ~20-30 KiB: with Faust's 16 KiB batches
# each message is a batch of its own, one per partition per request (half the throughput).
MAX_BATCH_BYTES = 1024 * 1024
# Per partition and fetch: 1 MiB is ~50 such records, and the agent waited on fetches.
MAX_FETCH_BYTES = 8 * 1024 * 1024
_STREAM_BUFFER_RECORDS = 256
# How long the group waits for its members to rejoin a rebalance (Faust's default is 60 s).
_REBALANCE_TIMEOUT_S = 10


class Record(Protocol):
    """An events record as Faust's `Message` and aiokafka's `ConsumerRecord` both have it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Any


class StreamWorker:
    """Builds the Faust app, its topics, table, agent and background tasks."""

    def __init__(
        self, settings: StreamSettings, pricing: Pricing, metrics: StreamMetrics | None = None
    ) -> None:
        self.settings = settings
        self.pricing = pricing
        self.metrics = metrics or StreamMetrics()
        self.index = DeadlineIndex()
        self.heartbeat = Heartbeat()
        # The traces of the partitions assigned here; the table is their durable copy.
        self.states: dict[str, TraceState] = {}
        self._publications = PublicationQueue(
            _MAX_QUEUED_PUBLICATIONS, int(settings.max_open_bytes * _QUEUED_SHARE_OF_BOUND)
        )
        # Revisions this worker has queued: a second `close` for them must not publish again.
        self._queued_revisions: dict[str, int] = {}
        # Per partition read (events and control): the offset of the next record (see
        # `_skipped_records`), and when (monotonic) it last moved.
        self._next_offsets: dict[TP, int] = {}
        self._moved_at: dict[TP, float] = {}
        # Table entries written in chunks (`chunks.py`): the keys of each one's chunks.
        self._chunks: dict[bytes, list[bytes]] = {}
        self._chunk_generations = itertools.count(time.time_ns())
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        s = self.settings
        app = faust_app(s)
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
        self.dead_letter_topic = app.topic(s.dead_letter_topic, partitions=1, **raw)
        self.table = app.Table("traces", default=None, partitions=s.partitions, **raw)
        self.table.on_recover(self._recover)
        self._changelog_topic = self.table.changelog_topic.get_topic_name()
        # Both topics are declared (created when missing) with the same partitions, so that
        # Faust assigns partition p of both to the same worker.
        source = app.topic(
            s.events_topic, control_topic(s), partitions=s.partitions, internal=True, **raw
        )
        app.agent(source, name="assemble")(self._assemble)
        app.timer(s.tick_s)(self._tick)
        app.timer(_STALL_S / 2)(self._wake_stalled)
        app.task(self._publisher)
        app.on_before_shutdown.connect(self._publish_before_stopping)
        app.on_partitions_revoked.connect(self._publish_before_handing_over)
        return app

    # -- the agent ----------------------------------------------------------------------------

    async def _assemble(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await self._publications.room()
            message = event.message
            try:
                gap = self._gap_before(message)
                if gap:
                    skipped = self._skipped_records(message.topic, message.partition, gap)
                    async with contextlib.aclosing(skipped):
                        async for record in skipped:
                            await self._handle(record)
                await self._handle(message)
            except Exception as error:  # a bug must not stop the partition: dead-letter it
                log.exception("record failed; dead-lettering it")
                await self._dead_letter(message, f"internal error: {error!r}", "internal")

    async def _handle(self, message: Record) -> None:
        headers = dict(message.headers) if message.headers else {}
        control = headers.get(CONTROL_HEADER)
        if control is not None:
            await self._control(control.decode(), orjson.loads(message.value))
            return
        self.metrics.records.inc()
        try:
            project = record_project(headers.get(PROJECT_HEADER))
            trace_id, events, as_sent = parse_record(message.value, self.settings.max_record_bytes)
        except SchemaError as error:
            await self._dead_letter(message, str(error), "invalid")
            return
        # A record pydantic had to normalise is kept in its normalised form.
        value = message.value if as_sent else orjson.dumps({"trace_id": trace_id, "events": events})
        now = time.time_ns()
        state = self.states.get(trace_id)
        if state is None:
            state = self.states[trace_id] = TraceState(trace_id, message.partition, project)
        elif project is not None and state.project not in (None, project):
            # A trace is delivered to its project's destination: another project's events (a
            # clash of trace ids, or a client reusing another's) must not join it. Records
            # without a project come from producers with access to Kafka itself, not through
            # the gateway: they join any trace, as a service instrumented with the SDK does in
            # a trace that crosses services.
            reason = f"trace {trace_id} belongs to project {state.project!r}, not {project!r}"
            await self._dead_letter(message, reason, "other_project")
            return
        result = apply_events(state, events, len(value), now)
        self.metrics.events.inc(result.applied)
        self.metrics.duplicates.inc(result.duplicates)
        self.metrics.late_events.inc(result.late)
        if result.applied:
            # The trace's first stamped record names its project, unless the trace went out
            # without one: its next revisions then follow the first to the same destination.
            adopted = project is not None and state.project is None and state.revision == 0
            if adopted:
                state.project = project
            key = record_key(trace_id, message.partition, message.offset, now, project)
            state.records.append((key, value))
            await self._put(state.partition, key, value)
            if result.late or adopted:
                await self._write_status(state)  # reopened, or a status mark without project
        await self._publish_if_too_big(state, now)
        self._track(state)

    async def _publish_if_too_big(self, state: TraceState, now: int) -> None:
        if state.status == OPEN and too_big(
            state, self.settings.max_observations, self.settings.max_trace_bytes
        ):
            # A finished trace goes out whole in parts; a running one sends what has ended.
            final = looks_complete(state)
            await self._start_publishing(state, Completion.MAX_SIZE, final=final, now=now)

    def _gap_before(self, message: Record) -> range:
        """The offsets of the message's partition between the last record handled and this one.

        Faust can drop fetched records around a rebalance and then commit over the gap they
        leave (faust-streaming#606, #221): those records would be lost. Neither topic read has
        gaps of its own (no compaction, no transactions), so a gap is read and handled before
        the message, still within its partition (so table writes go to the right changelog
        partition). A record that comes twice is applied once (event ids), and control records
        are idempotent."""
        tp, offset = TP(message.topic, message.partition), message.offset
        expected = self._next_offsets.get(tp)
        if expected is None or offset >= expected:
            self._next_offsets[tp] = offset + 1
            self._moved_at[tp] = time.monotonic()
        return range(0) if expected is None else range(expected, offset)

    async def _skipped_records(
        self, topic: str, partition: int, gap: range
    ) -> AsyncIterator[ConsumerRecord]:
        log.warning(
            "%s[%d] jumped from offset %d to %d: reading the records skipped",
            topic,
            partition,
            gap.start,
            gap.stop,
        )
        self.metrics.skipped_records.inc(len(gap))
        try:
            tp = TopicPartition(topic, partition)
            async with TopicReader(self.settings.bootstrap_servers, topic) as reader:
                async for record in reader.read(tp, gap.start, gap.stop):
                    yield record
        except (KafkaError, TimeoutError) as error:
            log.error(
                "records %d to %d of %s[%d] were skipped and cannot be read (%r)",
                gap.start,
                gap.stop - 1,
                topic,
                partition,
                error,
            )

    async def _control(self, command: str, body: dict[str, Any]) -> None:
        """Apply a control record: it names many traces of the partition it was sent to, so
        Faust's per-record cost is paid once per tick or publication round, not per trace."""
        if command == "wake":
            return  # its arrival alone shows a gap before it (see `_wake_stalled`)
        now = time.time_ns()
        if command == "published":
            for trace_id, revision, final in body["traces"]:
                await self._mark_published(trace_id, revision, final, now)
        else:
            for trace_id, reason in body["traces"]:
                await self._publications.room()
                await self._close(trace_id, reason, now)

    async def _mark_published(self, trace_id: str, revision: int, final: bool, now: int) -> None:
        if self._queued_revisions.get(trace_id) == revision:
            del self._queued_revisions[trace_id]
        state = self.states.get(trace_id)
        if state is None or state.status != PUBLISHING or state.revision != revision:
            return
        changed = state.status_since_ns < state.last_event_ns
        dropped = mark_published(state, now, final=final)
        if changed and final:
            state.status = OPEN  # events arrived while publishing: a new revision
        if state.snapshot is not None and not final:
            # Replaces the records.
            await self._put(state.partition, snapshot_key(trace_id), state.snapshot)
        await self._write_status(state)
        await self._delete(state.partition, dropped)
        # Events that came while the parts went out can leave the trace over the limit again.
        await self._publish_if_too_big(state, now)
        self._track(state)

    async def _close(self, trace_id: str, reason: str, now: int) -> None:
        state = self.states.get(trace_id)
        if state is None:
            return
        if state.status == PUBLISHED:
            if reason == "forget" and now >= state.status_since_ns + self._late_ns:
                del self.states[trace_id]
                self.index.discard(trace_id)
                await self._delete(
                    state.partition,
                    [status_key(trace_id), snapshot_key(trace_id), *(k for k, _ in state.records)],
                )
                return
            if reason == FORGET_NOW:
                # Memory bound: keep only the revision number, so a late event still gets a
                # higher revision (with the late observations only) instead of repeating one.
                await self._delete(
                    state.partition, [snapshot_key(trace_id), *forget_content(state)]
                )
                await self._write_status(state)
                self.metrics.forgotten.inc()
        elif state.status == PUBLISHING:
            if self._queued_revisions.get(state.trace_id) == state.revision:
                return  # already on its way from this worker
            # Recovered from the changelog: whether this revision went out is unknown.
            await self._start_publishing(
                state, state.completed_by or reason, final=True, now=now, republish=True
            )
        else:
            # Events may have arrived since the command was sent: decide on the state as it is.
            # A trace due anyway goes out with its own reason (an eviction, then, is none: its
            # own close is on the way, behind other records).
            due, current_reason = self._deadline(state)
            if now >= due:
                await self._start_publishing(state, current_reason, final=True, now=now)
            elif reason == Completion.EVICTED:
                self.metrics.evictions.inc()
                await self._start_publishing(state, reason, final=True, now=now)
        self._track(state)

    async def _start_publishing(
        self,
        state: TraceState,
        completed_by: str,
        final: bool,
        now: int,
        republish: bool = False,
    ) -> None:
        """Mark the trace `publishing` and queue its documents; parts of a trace split for size
        share one revision, a republication after a crash gets a new one."""
        if republish:
            state.parts_published = 0
        new_revision = state.parts_published == 0
        enrichment = Enrichment()
        documents = build_documents(
            state,
            materialize(state),
            completed_by,
            self.pricing,
            now,
            self.settings.max_observations,
            self.settings.max_document_bytes,
            final,
            enrichment,
            revision=state.revision + new_revision,
        )
        if not documents:
            return  # a size split with nothing ended yet: keep collecting
        state.revision += new_revision
        self.metrics.unpriced.inc(enrichment.unpriced_generations)
        # What this revision contains: observations missing from it are late in the next one.
        ids = [o["observation_id"] for d in documents for o in d.body["observations"]]
        state.published_ids = ids if final else [*state.published_ids, *ids]
        if not final:
            state.parts_published += len(documents)
        state.status = PUBLISHING
        state.completed_by = completed_by
        state.status_since_ns = now
        marked = await self._write_status(state)
        self._queued_revisions[state.trace_id] = state.revision
        self._publications.put(
            Publication(
                state.trace_id,
                state.partition,
                state.revision,
                [d.data for d in documents],
                final,
                marked,
                state.project,
            )
        )

    async def _dead_letter(self, message: Record, reason: str, kind: str) -> None:
        log.warning(
            "dead letter from %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            reason[:500],
        )
        source = f"{message.topic}/{message.partition}/{message.offset}"
        # The project header goes along as it came, so that a redrive stamps the record again.
        project = dict(message.headers or ()).get(PROJECT_HEADER)
        stamped = [] if project is None else [(PROJECT_HEADER, project)]
        try:
            await self._write_dead_letter(
                message.key,
                message.value,
                reason,
                kind,
                STREAM_STAGE,
                [(SOURCE_HEADER, source.encode()), *stamped],
            )
        except KafkaError as error:
            # Neither applied nor dead-lettered: it must be read again, so nothing after it may
            # be committed (`transport.py`).
            log.error("the dead letter of %s was refused: %r", source, error)
            cast(StreamTransport, self.app.transport).refused_write(error)

    async def _write_dead_letter(
        self,
        key: bytes | None,
        value: bytes,
        reason: str,
        kind: str,
        stage: str,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        await (
            await self.dead_letter_topic.send(
                key=key,
                value=value,
                headers=[
                    (REASON_HEADER, reason.encode()),
                    (STAGE_HEADER, stage.encode()),
                    *headers,
                ],
            )
        )
        self.metrics.dead_letters.labels(kind).inc()

    # -- state ----------------------------------------------------------------------------------

    @property
    def _late_ns(self) -> int:
        return int(self.settings.late_window_s * _NS)

    def _deadline(self, state: TraceState) -> tuple[int, str]:
        s = self.settings
        return deadline(state, int(s.grace_s * _NS), int(s.idle_timeout_s * _NS), self._late_ns)

    async def _write_status(self, state: TraceState) -> asyncio.Future[RecordMetadata]:
        return await self._put(state.partition, status_key(state.trace_id), state.status_mark())

    async def _delete(self, partition: int, keys: list[bytes]) -> None:
        store = self.table.data
        for key in keys:
            if key in store:
                await self._put(partition, key, None)

    async def _put(
        self, partition: int, key: bytes, value: bytes | None
    ) -> asyncio.Future[RecordMetadata]:
        """Set a table entry (None: delete it), in chunks when it is larger than a changelog
        message may be (`chunks.py`); the future resolves once the broker has it (and the
        writes to that partition before it)."""
        replaced = self._chunks.pop(key, ())
        if value is None:
            sent = await self._write(partition, key, None)
        else:
            entries = chunked(
                key,
                value,
                self.settings.max_document_bytes,
                partition,
                next(self._chunk_generations),
            )
            for entry_key, entry_value in entries:
                sent = await self._write(partition, entry_key, entry_value)
            if len(entries) > 1:
                self._chunks[key] = [chunk for chunk, _ in entries[:-1]]
        for chunk in replaced:
            await self._write(partition, chunk, None)
        return sent

    async def _write(
        self, partition: int, key: bytes, value: bytes | None
    ) -> asyncio.Future[RecordMetadata]:
        """Set a store entry and send it to the changelog partition of the trace's events
        partition.

        What `table[key] = value` does, without Faust's buffering of each write (its own
        future, queue and task: ~30 µs, and a trace takes three writes). Faust flushes the
        producer before it commits offsets, so these writes are in the changelog before the
        records that made them are committed, as Faust's own are."""
        store = self.table.data
        if value is None:
            del store[key]
        else:
            store[key] = value
        sent = await self.app.producer.send(
            self._changelog_topic, key, value, partition, None, None
        )
        sent.add_done_callback(self._on_changelog_write)
        return sent

    def _on_changelog_write(self, sent: asyncio.Future[RecordMetadata]) -> None:
        """Where a RocksDB store resumes recovering from the changelog (as Faust's own table
        writes record it). A failed write (the producer retries what can be retried) stops the
        worker before its next commit (`transport.py`)."""
        if sent.cancelled():
            return
        error = sent.exception()
        if error is not None:
            log.error("a changelog write failed: %r", error)
            cast(StreamTransport, self.app.transport).refused_write(error)
            return
        written = sent.result()
        self.table.data.set_persisted_offset(TP(written.topic, written.partition), written.offset)

    def _track(self, state: TraceState) -> None:
        if state.status == PUBLISHING:
            self.index.discard(state.trace_id)
        else:
            due, reason = self._deadline(state)
            is_open = state.status == OPEN
            self.index.set(
                state.trace_id,
                due,
                reason,
                state.partition,
                state.size,
                state.first_event_ns,
                is_open,
            )

    async def _recover(self) -> None:
        """After recovery: the traces of the partitions now assigned here. Those in memory
        stayed here through the rebalance; the others are rebuilt from the table."""
        active = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.settings.events_topic
        }
        # Faust reads each partition again from its committed offset (see `transport.py`).
        sources = (self.settings.events_topic, control_topic(self.settings))
        self._next_offsets = await self._resume_offsets(
            [TP(topic, p) for topic in sources for p in sorted(active)]
        )
        self._moved_at = dict.fromkeys(self._next_offsets, time.monotonic())
        self.states = {t: s for t, s in self.states.items() if s.partition in active}
        # The publisher still sends those that moved away; their new owner gets the acknowledgement.
        self._queued_revisions = {
            t: r for t, r in self._queued_revisions.items() if t in self.states
        }
        table = joined(self.table.items())
        for key in table.broken:
            log.error("table entry %r names chunks the changelog lacks: left out", key)
        for chunk in table.orphans:
            if (partition := chunk_partition(chunk)) in active:
                await self._write(partition, chunk, None)
        self._chunks = table.chunks
        rebuilt = rebuild(table.entries, skip=self.states.keys())
        self.states.update((t, s) for t, s in rebuilt.items() if s.partition in active)
        self.index.clear()
        for state in self.states.values():
            if state.status == PUBLISHING:
                self.index.set(
                    state.trace_id,
                    0,
                    state.completed_by or "republish",
                    state.partition,
                    0,
                    state.first_event_ns,
                )
            else:
                self._track(state)
        log.info("recovered %d traces in partitions %s", len(self.states), sorted(active))

    async def _resume_offsets(self, partitions: list[TP]) -> dict[TP, int]:
        """Where Faust resumes each partition: this group's committed offset, else the log
        start (the consumer reads from the earliest record). None known where the broker
        cannot say; the check of skipped records then starts at the partition's first record."""
        if not partitions:
            return {}
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        try:
            async with admin_client(self.settings.bootstrap_servers) as admin:
                committed = await committed_offsets(admin, self.settings.app_id, tps)
            async with TopicReader(self.settings.bootstrap_servers, tps[0].topic) as reader:
                starts = await reader.consumer.beginning_offsets(tps)
        except KafkaError as error:
            log.warning("committed offsets unavailable after recovery: %r", error)
            return {}
        offsets = {
            TP(tp.topic, tp.partition): starts[tp] if committed[tp] is None else committed[tp]
            for tp in tps
        }
        log.info("resuming at offsets %s", {f"{t}[{p}]": o for (t, p), o in offsets.items()})
        return offsets

    async def _wake_stalled(self) -> None:
        """Faust can take a partition's records from the broker without handing them to the
        agent. The next record shows the gap (`_gap_before`); when none comes, a stalled
        partition gets one: a `wake` control record, in the partition itself."""
        if self.app.rebalancing or not self.app.flow_control.is_active():
            return
        ends: dict[TP, int | None] = {}
        for tp in self._next_offsets:
            with contextlib.suppress(AssertionError):  # no longer assigned: a rebalance began
                ends[tp] = self.app.consumer.highwater(tp)
        now = time.monotonic()
        for tp in self._stalled(ends, now):
            log.warning(
                "%s[%d] has records up to offset %d, but none from offset %d reached the agent "
                "in %.0fs: waking it",
                tp.topic,
                tp.partition,
                ends[tp] - 1,
                self._next_offsets[tp],
                now - self._moved_at[tp],
            )
            self.metrics.wakes.inc()
            self._moved_at[tp] = now
            await self._send_control(tp.topic, tp.partition, "wake", [])

    def _stalled(self, ends: dict[TP, int | None], now: float) -> list[TP]:
        """The partitions with records past their next offset (`ends`: each one's end offset
        as last fetched) and none handled for `_STALL_S`."""
        return [
            tp
            for tp, end in ends.items()
            if end is not None
            and end > self._next_offsets[tp]
            and now - self._moved_at.get(tp, now) >= _STALL_S
        ]

    # -- time-based decisions and publication ---------------------------------------------------

    async def _tick(self) -> None:
        self.heartbeat.beat()
        self._update_gauges()
        now = time.time_ns()
        due = self.index.pop_due(now, again_ns=now + _CLOSE_AGAIN_NS)
        s = self.settings
        while (over := self.index.pop_over_bound(s.max_open_traces, s.max_open_bytes)) is not None:
            due.append(over)
        by_destination: dict[tuple[str, int], list[tuple[str, str]]] = {}
        for item in due:
            topic = control_topic(s) if item.reason in MEMORY_BOUND else s.events_topic
            by_destination.setdefault((topic, item.partition), []).append(
                (item.trace_id, item.reason)
            )
        for (topic, partition), traces in by_destination.items():
            await self._send_control(topic, partition, "close", traces)

    def _update_gauges(self) -> None:
        metrics, index = self.metrics, self.index
        metrics.open_traces.set(index.open_count)
        metrics.held_bytes.set(index.held_bytes)
        metrics.open_bytes.set(index.open_bytes)
        metrics.publishing_traces.set(len(self._queued_revisions))

    async def _send_control(
        self, topic: str, partition: int, command: str, traces: list[Any]
    ) -> None:
        """Send a command about `traces`, in records no larger than a document: after an
        outage or a restart one tick can close tens of thousands of a partition's traces."""
        per_record = self.settings.max_document_bytes // _CONTROL_ENTRY_BYTES
        for start in range(0, max(len(traces), 1), per_record):
            await self.app.producer.send(
                topic,
                CONTROL_KEY,
                orjson.dumps({"traces": traces[start : start + per_record]}),
                partition,
                None,
                [(CONTROL_HEADER, command.encode())],
            )

    async def _publisher(self) -> None:
        while True:
            batch = await self._publications.take_all()
            try:
                with self.metrics.publish_seconds.time():
                    unsent = await self._publish(batch)
            except NotReady:
                # Shutting down: the producer stopped first. These traces are marked
                # `publishing` in the changelog, so whichever worker takes the partition next
                # publishes them (as a higher revision if any part went out).
                log.info("stopping with %d traces left to publish after restart", len(batch))
                return
            except Exception as error:
                log.warning("publishing %d traces failed, retrying: %r", len(batch), error)
                unsent = batch
            self._publications.done(unsent)
            if unsent:
                await asyncio.sleep(_PUBLISH_RETRY_S)

    async def _publish_before_stopping(self, app: faust.App, **_: Any) -> None:
        """Faust calls this once the agent has stopped, while the producer still runs."""
        await self._settle_publications("stopping", self.settings.drain_timeout_s)

    async def _publish_before_handing_over(
        self, app: faust.App, revoked: Set[TP], **_: Any
    ) -> None:
        """Faust calls this when a rebalance takes the partitions (the agent has paused), before
        the group hands them out again: within half the rebalance timeout, or the worker would
        be left out of the group."""
        budget = min(self.settings.drain_timeout_s, _REBALANCE_TIMEOUT_S / 2)
        await self._settle_publications("handing over partitions", budget)

    async def _settle_publications(self, before: str, budget: float) -> None:
        """Let the publisher send what is queued, and the acknowledgements, for up to `budget`
        seconds. A trace left `publishing` is published again by the worker that takes its
        partition, as a higher revision; the acknowledgement spares it that, being in the
        control topic, which that worker reads ahead of the `close` that would republish it."""
        if not self._publications.unsettled:
            return
        log.info(
            "traces queued for publication: %d; publishing them before %s",
            self._publications.unsettled,
            before,
        )
        try:
            await asyncio.wait_for(self._publications.settled(), budget)
        except TimeoutError:
            log.warning(
                "%s after %.0fs with traces still to publish: %d; whichever worker takes their "
                "partitions publishes them (as higher revisions)",
                before,
                budget,
                self._publications.unsettled,
            )

    async def _publish(self, batch: list[Publication]) -> list[Publication]:
        """Send the documents of `batch` and acknowledge the traces sent; the publications
        whose documents could not be sent (the producer gave up retrying), to try again."""
        batch = await self._marked(batch)
        # The producer's own send: a topic's send wraps each message in Faust's bookkeeping.
        send, topic = self.app.producer.send, self.settings.traces_topic
        sent = []
        for publication in batch:
            key, headers = publication.trace_id.encode(), publication.headers
            sent.append(
                [await send(topic, key, d, None, None, headers) for d in publication.documents]
            )
        await asyncio.gather(*(f for futures in sent for f in futures), return_exceptions=True)
        acknowledged: dict[int, list[tuple[str, int, bool]]] = {}
        unsent = []
        for publication, futures in zip(batch, sent, strict=True):
            errors = [future.exception() for future in futures]
            if any(
                error is not None and not isinstance(error, _REFUSED_FOR_SIZE) for error in errors
            ):
                log.warning("trace %s was not sent, retrying: %r", publication.trace_id, errors)
                unsent.append(publication)
                continue
            refused = [d for d, error in zip(publication.documents, errors, strict=True) if error]
            dead_lettered = await self._send_alone(publication, refused) if refused else 0
            self.metrics.published.labels("final" if publication.final else "part").inc(
                len(publication.documents) - dead_lettered
            )
            acknowledged.setdefault(publication.partition, []).append(
                (publication.trace_id, publication.revision, publication.final)
            )
        for partition, traces in acknowledged.items():
            await self._send_control(control_topic(self.settings), partition, "published", traces)
        return unsent

    async def _send_alone(self, publication: Publication, documents: list[bytes]) -> int:
        """Send documents the traces topic refused for their size, each in a batch of its own:
        a broker holds a whole record batch to the topic's limit, so documents that fit it
        alone are refused when they travel together. One refused alone is dead-lettered
        (`tracebus dlq redrive` sends it again once the limit is raised); how many were."""
        key = publication.trace_id.encode()
        dead_lettered = 0
        for document in documents:
            # Only this task writes to the traces topic: awaiting each send leaves no batch
            # open for the next to join.
            try:
                await (
                    await self.app.producer.send(
                        self.settings.traces_topic, key, document, None, None, publication.headers
                    )
                )
            except _REFUSED_FOR_SIZE as error:
                await self._dead_letter_document(publication, document, error)
                dead_lettered += 1
        return dead_lettered

    async def _dead_letter_document(
        self, publication: Publication, document: bytes, error: BaseException
    ) -> None:
        reason = (
            f"the traces topic refused revision {publication.revision} of trace "
            f"{publication.trace_id}, a document of {len(document)} bytes ({error!r}): its "
            "max.message.bytes is below TRACEBUS_MAX_DOCUMENT_BYTES"
        )
        log.error("dead-lettering a document: %s", reason)
        key = publication.trace_id.encode()
        try:
            await self._write_dead_letter(
                key, document, reason, "refused", PUBLISH_STAGE, publication.headers or ()
            )
        except _REFUSED_FOR_SIZE:
            # The dead-letter topic has the limit too: the reason at least is kept.
            await self._write_dead_letter(
                key,
                b"",
                f"{reason}; the dead-letter topic refused it too",
                "refused",
                PUBLISH_STAGE,
            )

    async def _marked(self, batch: list[Publication]) -> list[Publication]:
        """The publications whose `publishing` mark is in the changelog, once it is. A trace
        whose mark could not be written is republished as its next revision (a `close` makes
        its partition write a new mark): sending this revision could repeat it after a crash."""
        results = await asyncio.gather(*(p.marked for p in batch), return_exceptions=True)
        marked: list[Publication] = []
        unmarked: dict[int, list[tuple[str, str]]] = {}
        for publication, result in zip(batch, results, strict=True):
            if not isinstance(result, Exception):
                marked.append(publication)
                continue
            log.warning("trace %s: its mark was not written (%r)", publication.trace_id, result)
            if self._queued_revisions.get(publication.trace_id) == publication.revision:
                del self._queued_revisions[publication.trace_id]
            unmarked.setdefault(publication.partition, []).append(
                (publication.trace_id, "republish")
            )
        for partition, traces in unmarked.items():
            await self._send_control(control_topic(self.settings), partition, "close", traces)
        return marked


def control_topic(settings: StreamSettings) -> str:
    """The topic of a stream app's control records (its own, like its table's changelog)."""
    return f"{settings.app_id}-control"


def faust_app(settings: StreamSettings) -> faust.App:
    """A Faust app configured for the stream: its broker settings, tuned throughput, and the
    transport that keeps records from being lost on rebalances (`transport.py`)."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        store="memory://" if settings.store == "memory" else "rocksdb://",
        datadir=str(settings.data_dir),
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        # The embedded broker answers a join after half the session timeout: with Faust's
        # default (60 s), joins took half a minute.
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=_REBALANCE_TIMEOUT_S,
        broker_heartbeat_interval=1,
        # Table writes are one changelog message each: lingering batches them (2.5× faster).
        producer_linger=0.05,
        # A broker holds a whole record batch to a topic's `max.message.bytes`: a topic that
        # takes the worker's largest documents then takes its batches too.
        producer_max_batch_size=min(MAX_BATCH_BYTES, settings.max_document_bytes),
        producer_max_request_size=MAX_REQUEST_BYTES,
        consumer_max_fetch_size=MAX_FETCH_BYTES,
        # At most this many records are handed to the agent per fetch: a control record fetched
        # meanwhile waits behind no more than that (and the stream buffer). At 1,000, a worker
        # catching up on a backlog held 2-5× as many traces awaiting their acknowledgement (an
        # extra ~40 MiB of 20 KB traces) at the same throughput.
        broker_max_poll_records=250,
        # The agent's buffer of records read ahead, events and control alike. Faust's 4,096
        # hold ~80 MiB of SDK records on a worker reading a backlog, and a `published`
        # acknowledgement waits behind all of them, its trace's content held meanwhile.
        stream_buffer_maxsize=_STREAM_BUFFER_RECORDS,
        key_serializer="raw",
        value_serializer="raw",
        broker_credentials=KafkaSecurity().faust_credentials(),
    )
    app.transport = StreamTransport(app.conf.broker_consumer, app)
    app.transport.first_topics = frozenset([control_topic(settings)])
    return app


class Worker(faust.Worker):  # type: ignore[misc]
    """A Faust worker whose stop, however it begins (a signal, a crash, a refused write), ends
    the process by `deadline` (`tracebus/stopping.py`). Named as Faust's own, so that its log
    lines read as they always have ("[^Worker]: Ready")."""

    def __init__(self, app: faust.App, deadline: StopDeadline, **options: Any) -> None:
        super().__init__(app, **options)
        self.deadline = deadline

    async def on_stop(self) -> None:
        self.deadline.arm()
        await super().on_stop()


def run_worker(app: faust.App, deadline: StopDeadline) -> int:
    """Run until SIGTERM/SIGINT, a crash or a refused write (`transport.py`); the exit code
    `faust worker` would end with, and 1 for a refused write. A stop that outlasts `deadline`
    exits the process with the deadline's code instead. Logging stays as the process set it
    up (the CLI's one line per record), not Faust's."""
    faust_worker = Worker(app, deadline, quiet=True, override_logging=False)
    # Faust's spinner sets the root logger to DEBUG, which costs ~9% CPU in log records.
    faust_worker.spinner = None
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exit_:  # how it always ends
        return int(exit_.code or 0) or int(cast(StreamTransport, app.transport).refusal is not None)
