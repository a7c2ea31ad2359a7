"""Dead letters as the stream and the sinks write them, and bounded reads of the dead-letter topic.

A dead letter's value is the original record's bytes and its key the original key; headers say
why (`tracebus-reason`), where it failed (`tracebus-stage`: `stream`, `stream:publish` for a trace
document the traces topic refused, or `sink:<name>`), where it came from (`tracebus-source`:
`topic/partition/offset`, but for a document) and, for sinks, the destination's answer
(`tracebus-status`, `tracebus-response`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from tracebus.ops.topic_reader import OffsetBounds, TopicReader

REASON_HEADER = "tracebus-reason"
STAGE_HEADER = "tracebus-stage"
SOURCE_HEADER = "tracebus-source"
STATUS_HEADER = "tracebus-status"
RESPONSE_HEADER = "tracebus-response"
# Set on records re-sent by `tracebus dlq redrive`.
REDRIVEN_FROM_HEADER = "tracebus-redriven-from"
# On a sink's dead letter redriven to the traces topic: the one sink that delivers it again.
ONLY_SINK_HEADER = "tracebus-only-sink"

STREAM_STAGE = "stream"
# A trace document the traces topic refused (its value is the document).
PUBLISH_STAGE = "stream:publish"
SINK_STAGE_PREFIX = "sink:"
DEFAULT_MAX_SCAN = 10_000
_FIRST_WINDOW = 100
_LARGEST_WINDOW = 2_000


@dataclass(frozen=True)
class Source:
    """Where a dead letter was read before it failed."""

    topic: str
    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str | None) -> Source | None:
        """`topic/partition/offset` (topic names cannot contain `/`); None when malformed."""
        if not text:
            return None
        topic, _, rest = text.partition("/")
        partition, _, offset = rest.partition("/")
        if not (topic and partition.isdigit() and offset.isdigit()):
            return None
        return cls(topic, int(partition), int(offset))

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> DeadLetter:
        return cls(
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value or b"",
            headers=tuple((name, value or b"") for name, value in record.headers or ()),
        )

    def header(self, name: str) -> str | None:
        """The last value of header `name`, as text; None when absent."""
        values = [value for key, value in self.headers if key == name]
        return values[-1].decode("utf-8", "replace") if values else None

    @property
    def stage(self) -> str:
        """`stream`, `stream:publish`, `sink:<name>`, or "" when the header is missing."""
        return self.header(STAGE_HEADER) or ""

    @property
    def reason(self) -> str:
        return self.header(REASON_HEADER) or ""

    @property
    def status(self) -> str | None:
        return self.header(STATUS_HEADER)

    @property
    def response(self) -> str | None:
        return self.header(RESPONSE_HEADER)

    @property
    def source(self) -> Source | None:
        return Source.parse(self.header(SOURCE_HEADER))

    @property
    def key_text(self) -> str | None:
        """The key (a trace id for tracebus records) as text."""
        return None if self.key is None else self.key.decode("utf-8", "replace")

    @property
    def size(self) -> int:
        return len(self.value)


def stage_matches(stage_filter: str | None, stage: str) -> bool:
    """No filter matches everything; `sink` matches every `sink:<name>` (`stream` likewise
    `stream:publish`); else the exact stage."""
    if stage_filter is None:
        return True
    return stage == stage_filter or stage.startswith(stage_filter + ":")


def sink_name(stage: str) -> str | None:
    """`langfuse` for `sink:langfuse`; None for other stages."""
    if stage.startswith(SINK_STAGE_PREFIX) and len(stage) > len(SINK_STAGE_PREFIX):
        return stage[len(SINK_STAGE_PREFIX) :]
    return None


# -- listing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterPage:
    """Dead letters found by a bounded read, and how much of the topic was read to find them."""

    letters: list[DeadLetter]
    examined: int
    in_topic: int
    partitions: int

    @property
    def complete(self) -> bool:
        """Whether every dead letter in the topic was examined."""
        return self.examined >= self.in_topic


async def list_dead_letters(
    bootstrap_servers: str,
    topic: str,
    *,
    limit: int,
    stage: str | None = None,
    newest_first: bool = True,
    max_scan: int = DEFAULT_MAX_SCAN,
    idle_timeout: float = 10.0,
) -> DeadLetterPage:
    """Up to `limit` dead letters of `stage`, newest first (or oldest first), reading at most
    `max_scan` records per partition."""

    def wanted(letter: DeadLetter) -> bool:
        return stage_matches(stage, letter.stage)

    async with TopicReader(bootstrap_servers, topic, idle_timeout) as reader:
        bounds = await reader.bounds()
        found: list[DeadLetter] = []
        examined = 0
        for partition, bound in bounds.items():
            read = _read_newest if newest_first else _read_oldest
            letters, scanned = await read(reader, partition, bound, wanted, limit, max_scan)
            found.extend(letters)
            examined += scanned
    found.sort(key=lambda letter: (letter.timestamp_ms, letter.offset), reverse=newest_first)
    return DeadLetterPage(
        found[:limit],
        examined,
        sum(bound.count for bound in bounds.values()),
        len(bounds),
    )


async def _read_oldest(
    reader: TopicReader,
    partition: TopicPartition,
    bound: OffsetBounds,
    wanted: Callable[[DeadLetter], bool],
    limit: int,
    max_scan: int,
) -> tuple[list[DeadLetter], int]:
    found: list[DeadLetter] = []
    scanned = 0
    async for record in reader.read(partition, bound.start, min(bound.end, bound.start + max_scan)):
        scanned = record.offset - bound.start + 1
        letter = DeadLetter.from_record(record)
        if wanted(letter):
            found.append(letter)
            if len(found) >= limit:
                break
    else:
        scanned = min(bound.count, max_scan)
    return found, scanned


async def _read_newest(
    reader: TopicReader,
    partition: TopicPartition,
    bound: OffsetBounds,
    wanted: Callable[[DeadLetter], bool],
    limit: int,
    max_scan: int,
) -> tuple[list[DeadLetter], int]:
    """Windows read backwards from the end, growing, until `limit` letters are found."""
    found: list[DeadLetter] = []
    high = bound.end
    window = max(limit, _FIRST_WINDOW)
    scanned = 0
    while high > bound.start and len(found) < limit and scanned < max_scan:
        low = max(bound.start, high - window, high - (max_scan - scanned))
        chunk = [
            DeadLetter.from_record(record) async for record in reader.read(partition, low, high)
        ]
        found[:0] = [letter for letter in chunk if wanted(letter)]
        scanned += high - low
        high = low
        window = min(window * 2, _LARGEST_WINDOW)
    return found[-limit:], scanned


async def dead_letter_at(
    bootstrap_servers: str,
    topic: str,
    offset: int,
    partition: int = 0,
    idle_timeout: float = 10.0,
) -> DeadLetter | None:
    """The dead letter at `offset` of `partition`; None when the partition holds no such offset."""
    async with TopicReader(bootstrap_servers, topic, idle_timeout) as reader:
        tp = TopicPartition(topic, partition)
        bound = (await reader.bounds()).get(tp)
        if bound is None or not bound.start <= offset < bound.end:
            return None
        async for record in reader.read(tp, offset, offset + 1):
            return DeadLetter.from_record(record)
    return None


# -- counting by stage ----------------------------------------------------------------------------


@dataclass
class StageSummary:
    """The dead letters of one stage among those read."""

    stage: str
    count: int = 0
    newest_timestamp_ms: int = 0
    positions: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)


@dataclass(frozen=True)
class DeadLetterSummary:
    stages: list[StageSummary]
    examined: int
    in_topic: int

    @property
    def complete(self) -> bool:
        return self.examined >= self.in_topic


async def summarize_by_stage(
    bootstrap_servers: str,
    topic: str,
    max_scan: int = DEFAULT_MAX_SCAN,
    idle_timeout: float = 10.0,
) -> DeadLetterSummary:
    """Dead letters per stage among the newest `max_scan` of each partition (most first)."""
    stages: dict[str, StageSummary] = {}
    async with TopicReader(bootstrap_servers, topic, idle_timeout) as reader:
        bounds = await reader.bounds()
        examined = 0
        for partition, bound in bounds.items():
            start = max(bound.start, bound.end - max_scan)
            examined += bound.end - start
            async for record in reader.read(partition, start, bound.end):
                letter = DeadLetter.from_record(record)
                summary = stages.setdefault(letter.stage, StageSummary(letter.stage))
                summary.count += 1
                summary.newest_timestamp_ms = max(summary.newest_timestamp_ms, letter.timestamp_ms)
                summary.positions.append((letter.partition, letter.offset))
    ordered = sorted(stages.values(), key=lambda s: (-s.count, s.stage))
    return DeadLetterSummary(ordered, examined, sum(b.count for b in bounds.values()))
