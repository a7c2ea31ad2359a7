"""Backfill: trace documents from an archive (the jsonl sink's files) to a destination.

For traces the traces topic no longer holds: a destination added after Kafka's retention
dropped what it missed, or one restored from a backup. An archive is append-only (a replay
appends again), so it can hold several revisions of a trace: only the highest of each part
goes out, whatever the order of the files.

The chosen documents are loaded into a topic of the run's own and delivered from there as a
replay of that topic's whole range, by the sinks' own delivery runtime: the same batching,
retries, bisecting, dead letters and routes as `tracebus sink`, and the same deterministic ids,
so running a backfill again replaces what the last run delivered instead of duplicating it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tracebus.kafka import create_topics
from tracebus.kafka.connection import kafka_options
from tracebus.schemas import (
    DEFAULT_MAX_RECORD_BYTES,
    PROJECT_HEADER,
    SchemaError,
    TraceDocument,
    decode_document,
)

ARCHIVE_SUFFIX = ".jsonl"
_EXAMPLES = 20  # unreadable lines kept to show; the rest are counted
_SENDS_IN_FLIGHT = 1_000


@dataclass(frozen=True)
class Unreadable:
    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Scope:
    """Which documents a backfill takes: traces that started in [since, until), of `project`."""

    since_ns: int | None = None
    until_ns: int | None = None
    project: str | None = None

    def takes(self, document: TraceDocument) -> bool:
        started = document.summary.start_time_unix_nano
        return (
            (self.since_ns is None or started >= self.since_ns)
            and (self.until_ns is None or started < self.until_ns)
            and (self.project is None or document.project == self.project)
        )


@dataclass(frozen=True, slots=True)
class _Choice:
    revision: int
    file: int
    line: int
    project: str | None


@dataclass
class Selection:
    """What an archive holds, and which line of it goes out for each (trace, part)."""

    files: list[Path]
    documents: int = 0
    outside: int = 0  # out of the scope's time range or project
    superseded: int = 0  # the same part again, at the same or a lower revision
    unreadable: int = 0
    examples: list[Unreadable] = field(default_factory=list)
    _chosen: dict[tuple[str, int], _Choice] = field(default_factory=dict)

    @property
    def chosen(self) -> int:
        return len(self._chosen)

    def consider(self, document: TraceDocument, file: int, line: int) -> None:
        key = (document.trace_id, document.part)
        held = self._chosen.get(key)
        if held is not None:
            self.superseded += 1
            if held.revision >= document.revision:
                return
        self._chosen[key] = _Choice(document.revision, file, line, document.project)

    def refuse(self, path: Path, line: int, reason: str) -> None:
        self.unreadable += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(Unreadable(path, line, reason))

    def lines(self) -> dict[tuple[int, int], tuple[str, str | None]]:
        """(file index, line number) → (trace id, project) of every chosen document."""
        return {
            (choice.file, choice.line): (trace_id, choice.project)
            for (trace_id, _), choice in self._chosen.items()
        }


def archive_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, and each directory's `*.jsonl` files by name (the jsonl sink's names
    begin with the time the file was started)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.name.endswith(ARCHIVE_SUFFIX)))
        else:
            files.append(path)
    return files


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as file:
        yield from enumerate(file, 1)


def select(
    files: list[Path],
    scope: Scope,
    on_read: Callable[[int], None] = lambda _: None,
    max_document_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Selection:
    """Read every line of `files` (`on_read` is told the bytes of each); a line that is not a
    trace document, or is larger than a Kafka message takes, is counted with its reason."""
    selection = Selection(files)
    for index, path in enumerate(files):
        for number, line in _numbered_lines(path):
            on_read(len(line))
            content = line.strip()
            if not content:
                continue
            if len(content) > max_document_bytes:
                reason = f"document is {len(content)} bytes; limit {max_document_bytes}"
                selection.refuse(path, number, reason)
                continue
            try:
                document = decode_document(content)
            except SchemaError as error:
                selection.refuse(path, number, f"not a trace document: {error}")
                continue
            selection.documents += 1
            if scope.takes(document):
                selection.consider(document, index, number)
            else:
                selection.outside += 1
    return selection


async def load(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    selection: Selection,
    on_loaded: Callable[[int], None] = lambda _: None,
) -> None:
    """Create `topic` and write the chosen documents to it, keyed by trace id and stamped
    with their project (as the stream writes the traces topic), acknowledged by every replica."""
    await create_topics(bootstrap_servers, {topic: partitions})
    wanted = selection.lines()
    producer = AIOKafkaProducer(
        **kafka_options(bootstrap_servers),
        acks="all",
        client_id="tracebus-backfill",
        linger_ms=20,
        max_request_size=4 * DEFAULT_MAX_RECORD_BYTES,
    )
    await producer.start()
    try:
        sends: list[asyncio.Future[object]] = []
        for index, path in enumerate(selection.files):
            for number, line in _numbered_lines(path):
                target = wanted.get((index, number))
                if target is None:
                    continue
                trace_id, project = target
                headers = [(PROJECT_HEADER, project.encode())] if project else []
                sends.append(
                    await producer.send(topic, line.strip(), key=trace_id.encode(), headers=headers)
                )
                if len(sends) >= _SENDS_IN_FLIGHT:
                    await asyncio.gather(*sends)
                    on_loaded(len(sends))
                    sends.clear()
        await asyncio.gather(*sends)
        on_loaded(len(sends))
    finally:
        await producer.stop()
