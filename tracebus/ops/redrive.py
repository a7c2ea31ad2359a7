"""Redrive: re-send dead letters to where they came from, once each.

Stream dead letters go back to the events topic, trace documents the traces topic refused
(`stream:publish`) to the traces topic, sink dead letters to the traces topic with
`tracebus-only-sink: <name>`: the other sinks skip them (and would deliver them idempotently).
A redriven record keeps its key, its source partition when the source topic is the target, and
carries `tracebus-redriven-from: <dead-letter offset>`.

Progress is kept per stage, as the committed offset of the consumer group
`<progress group>.<stage>` (`tracebus-dlq-redrive.sink.langfuse`) on the dead-letter topic: every
dead letter of that stage below it has been redriven. Per stage, because redriving only
`sink:langfuse` must not count the stream's dead letters as done. It is committed after each
re-send, so an interrupted redrive resumes where it stopped (the letter being sent at that
moment may be sent twice)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tracebus.config import KafkaSettings
from tracebus.kafka.connection import kafka_options
from tracebus.ops.deadletters import (
    ONLY_SINK_HEADER,
    PUBLISH_STAGE,
    REDRIVEN_FROM_HEADER,
    STREAM_STAGE,
    DeadLetter,
    DeadLetterSummary,
    sink_name,
    stage_matches,
)
from tracebus.ops.groups import admin_client, committed_offsets
from tracebus.ops.topic_reader import OffsetBounds, TopicReader, partition_count
from tracebus.schemas import PROJECT_HEADER

DEFAULT_PROGRESS_GROUP = "tracebus-dlq-redrive"


def progress_group(prefix: str, stage: str) -> str:
    """The consumer group keeping the redrive progress of `stage`."""
    return f"{prefix}.{stage.replace(':', '.')}"


def redrivable(stage: str) -> bool:
    return stage in (STREAM_STAGE, PUBLISH_STAGE) or sink_name(stage) is not None


@dataclass(frozen=True)
class OffsetRange:
    """Dead-letter offsets from `first` to `last`, both included."""

    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> OffsetRange:
        """`A-B` or `A`; ValueError when malformed or reversed."""
        first, dash, last = text.strip().partition("-")
        if not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise ValueError(f"{text!r} is not an offset range like 10-20 or 15")
        bounds = cls(int(first), int(last) if dash else int(first))
        if bounds.last < bounds.first:
            raise ValueError(f"{text!r} ends before it starts")
        return bounds

    def __contains__(self, offset: int) -> bool:
        return self.first <= offset <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


@dataclass(frozen=True)
class RedriveRequest:
    """Which dead letters to redrive. By default those of `stage` (every stage when None) not
    redriven before; `offsets` or `everything` choose regardless of earlier redrives."""

    stage: str | None = None
    offsets: OffsetRange | None = None
    everything: bool = False
    dry_run: bool = False
    progress_group: str = DEFAULT_PROGRESS_GROUP

    def __post_init__(self) -> None:
        if self.offsets is not None and self.everything:
            raise ValueError("choose either an offset range or everything, not both")


@dataclass(frozen=True)
class Target:
    """Where a dead letter is re-sent; partition None lets the key choose."""

    topic: str
    partition: int | None
    headers: list[tuple[str, bytes]]


def redriven_from(letter: DeadLetter) -> str:
    """The dead letter's offset (`partition/offset` outside partition 0 of the topic)."""
    return str(letter.offset) if letter.partition == 0 else f"{letter.partition}/{letter.offset}"


def target_of(
    letter: DeadLetter, settings: KafkaSettings, partitions: dict[str, int]
) -> Target | str:
    """Where `letter` goes back to, or why it cannot be redriven."""
    stage = letter.stage
    sink = sink_name(stage)
    # The trace's project, which every stage keeps on its dead letters: the stream assembles
    # by it, and sinks route by it.
    extra = [(name, value) for name, value in letter.headers if name == PROJECT_HEADER]
    if stage == STREAM_STAGE:
        topic = settings.events_topic
    elif stage == PUBLISH_STAGE:
        topic = settings.traces_topic
    elif sink is not None:
        topic = settings.traces_topic
        extra.append((ONLY_SINK_HEADER, sink.encode()))
    else:
        return f"unknown stage {stage!r}" if stage else "no tracebus-stage header"
    # Its own partition: the stream keeps per-trace state per partition, and a key hashed by
    # another client's partitioner may land elsewhere.
    source = letter.source
    partition = None
    if source is not None and source.topic == topic and source.partition < partitions[topic]:
        partition = source.partition
    return Target(
        topic, partition, [(REDRIVEN_FROM_HEADER, redriven_from(letter).encode()), *extra]
    )


@dataclass(frozen=True)
class Redriven:
    partition: int
    offset: int
    stage: str
    key: str | None
    topic: str
    target_partition: int | None


@dataclass(frozen=True)
class Unredrivable:
    partition: int
    offset: int
    why: str


@dataclass
class RedriveReport:
    dry_run: bool
    examined: int = 0
    other_stages: int = 0
    already_redriven: int = 0
    redriven: list[Redriven] = field(default_factory=list)
    unredrivable: list[Unredrivable] = field(default_factory=list)

    def routes(self) -> Counter[tuple[str, str]]:
        """(stage, target topic) → dead letters redriven (or that would be, in a dry run)."""
        return Counter((r.stage, r.topic) for r in self.redriven)


class RedriveFailed(Exception):
    """Kafka failed mid-way; `report` says what was redriven (and committed) before."""

    def __init__(self, report: RedriveReport, cause: BaseException) -> None:
        super().__init__(f"redrive stopped after {len(report.redriven)} re-sent: {cause}")
        self.report = report
        self.cause = cause


class _Progress:
    """Committed redrive progress per stage and dead-letter partition."""

    def __init__(
        self,
        admin: AIOKafkaAdminClient,
        bootstrap_servers: str,
        request: RedriveRequest,
        partitions: list[TopicPartition],
    ) -> None:
        self._admin = admin
        self._bootstrap_servers = bootstrap_servers
        self._request = request
        self._partitions = partitions
        self._committed: dict[str, dict[TopicPartition, int]] = {}
        self._at_start: dict[str, dict[TopicPartition, int]] = {}
        self._committers: dict[str, AIOKafkaConsumer] = {}

    async def committed(self, stage: str, partition: TopicPartition) -> int:
        if stage not in self._committed:
            group = progress_group(self._request.progress_group, stage)
            found = await committed_offsets(self._admin, group, self._partitions)
            self._committed[stage] = {tp: offset or 0 for tp, offset in found.items()}
            self._at_start[stage] = dict(self._committed[stage])
        return self._committed[stage][partition]

    async def advance(self, stage: str, partition: TopicPartition, next_offset: int) -> None:
        """Commit `next_offset` if every letter of `stage` below it is now redriven."""
        current = await self.committed(stage, partition)
        offsets = self._request.offsets
        # A range starting above the progress skipped letters between the two: keep them due.
        if offsets is not None and self._at_start[stage][partition] < offsets.first:
            return
        if next_offset <= current:
            return
        committer = await self._committer(stage)
        await committer.commit({partition: next_offset})
        self._committed[stage][partition] = next_offset

    async def _committer(self, stage: str) -> AIOKafkaConsumer:
        if stage not in self._committers:
            consumer = AIOKafkaConsumer(
                **kafka_options(self._bootstrap_servers),
                group_id=progress_group(self._request.progress_group, stage),
                client_id="tracebus-dlq-redrive",
                enable_auto_commit=False,
            )
            await consumer.start()
            self._committers[stage] = consumer
            # Assigned, never subscribed, paused: commits without joining the group, and no
            # fetch is left waiting for new records when it stops.
            consumer.assign(self._partitions)
            consumer.pause(*self._partitions)
        return self._committers[stage]

    async def close(self) -> None:
        for consumer in self._committers.values():
            await consumer.stop()


def _read_range(bound: OffsetBounds, offsets: OffsetRange | None) -> tuple[int, int]:
    if offsets is None:
        return bound.start, bound.end
    return max(bound.start, offsets.first), min(bound.end, offsets.last + 1)


class _Redriver:
    """Decides, for each dead letter in turn, whether to re-send it, and does."""

    def __init__(
        self,
        settings: KafkaSettings,
        request: RedriveRequest,
        target_partitions: dict[str, int],
        progress: _Progress,
        producer: AIOKafkaProducer | None,  # None in a dry run
    ) -> None:
        self.settings = settings
        self.request = request
        self.target_partitions = target_partitions
        self.progress = progress
        self.producer = producer
        self.report = RedriveReport(dry_run=request.dry_run)

    async def consider(self, letter: DeadLetter, partition: TopicPartition) -> None:
        report = self.report
        report.examined += 1
        stage = letter.stage
        if not stage_matches(self.request.stage, stage):
            report.other_stages += 1
            return
        target = target_of(letter, self.settings, self.target_partitions)
        if isinstance(target, str):
            report.unredrivable.append(Unredrivable(letter.partition, letter.offset, target))
            return
        chosen = self.request.everything or self.request.offsets is not None
        if not chosen and letter.offset < await self.progress.committed(stage, partition):
            report.already_redriven += 1
            return
        if self.producer is not None:
            sent = await self.producer.send(
                target.topic,
                letter.value,
                key=letter.key,
                partition=target.partition,
                headers=target.headers,
            )
            await sent
            await self.progress.advance(stage, partition, letter.offset + 1)
        report.redriven.append(
            Redriven(
                letter.partition,
                letter.offset,
                stage,
                letter.key_text,
                target.topic,
                target.partition,
            )
        )


async def redrive_dead_letters(
    settings: KafkaSettings,
    request: RedriveRequest,
    *,
    idle_timeout: float = 10.0,
    on_examined: Callable[[int, int], None] | None = None,
) -> RedriveReport:
    """Redrive the dead letters `request` selects among those in the topic now.

    `on_examined(examined, total)` follows the progress. MissingTopicError when a topic is
    missing; RedriveFailed when Kafka fails mid-way."""
    servers = settings.bootstrap_servers
    target_partitions = {
        topic: await partition_count(servers, topic)
        for topic in (settings.events_topic, settings.traces_topic)
    }
    async with (
        TopicReader(servers, settings.dead_letter_topic, idle_timeout) as reader,
        admin_client(servers) as admin,
    ):
        # Bounds fixed now: letters written meanwhile (redriven ones failing again) wait.
        ranges = {
            tp: _read_range(bound, request.offsets) for tp, bound in (await reader.bounds()).items()
        }
        total = sum(max(stop - start, 0) for start, stop in ranges.values())
        progress = _Progress(admin, servers, request, reader.partitions)
        producer = None
        if not request.dry_run:
            producer = AIOKafkaProducer(
                **kafka_options(servers), acks="all", client_id="tracebus-dlq-redrive"
            )
        redriver = _Redriver(settings, request, target_partitions, progress, producer)
        try:
            if producer is not None:
                await producer.start()
            if on_examined is not None:
                on_examined(0, total)
            for tp, (start, stop) in ranges.items():
                async for record in reader.read(tp, start, stop):
                    await redriver.consider(DeadLetter.from_record(record), tp)
                    if on_examined is not None:
                        on_examined(redriver.report.examined, total)
        except (KafkaError, OSError, TimeoutError) as error:
            raise RedriveFailed(redriver.report, error) from error
        finally:
            await progress.close()
            if producer is not None:
                await producer.stop()
    return redriver.report


async def awaiting_redrive(
    bootstrap_servers: str,
    dead_letter_topic: str,
    summary: DeadLetterSummary,
    prefix: str = DEFAULT_PROGRESS_GROUP,
) -> dict[str, int]:
    """Per redrivable stage of `summary`: its dead letters not redriven yet (among those read)."""
    count = await partition_count(bootstrap_servers, dead_letter_topic)
    partitions = [TopicPartition(dead_letter_topic, p) for p in range(count)]
    awaiting: dict[str, int] = {}
    async with admin_client(bootstrap_servers) as admin:
        for stage in summary.stages:
            if not redrivable(stage.stage):
                continue
            group = progress_group(prefix, stage.stage)
            committed = await committed_offsets(admin, group, partitions)
            awaiting[stage.stage] = sum(
                1
                for partition, offset in stage.positions
                if offset >= (committed.get(TopicPartition(dead_letter_topic, partition)) or 0)
            )
    return awaiting
