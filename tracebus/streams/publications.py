"""The traces a worker has marked `publishing`, queued for its publisher.

A trace on its way out is no longer counted by the memory bound (it is no longer open, nor kept
for late events), yet it holds its state and its documents until they are acknowledged. The
queue bounds what that takes: the agent waits for room before it takes in more (`room`), so the
traces on their way out hold at most twice the queue's bounds (the queue, and the batch the
publisher is sending).

A worker that stops or hands over partitions first waits until the queue has `settled`
(everything in it sent, and its acknowledgements): a trace left `publishing` is published again,
as its next revision, by whichever worker takes its partition, which cannot know whether it went
out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.structs import RecordMetadata

from tracebus.schemas import PROJECT_HEADER


@dataclass
class Publication:
    trace_id: str
    partition: int
    revision: int
    documents: list[bytes]
    final: bool
    # The changelog write of the trace's `publishing` mark: no document leaves before it.
    marked: asyncio.Future[RecordMetadata]
    project: str | None = None

    @property
    def size(self) -> int:
        return sum(map(len, self.documents))

    @property
    def headers(self) -> list[tuple[str, bytes]] | None:
        """The headers of its documents' records: the trace's project, which a sink routes by
        without decoding the document."""
        return None if self.project is None else [(PROJECT_HEADER, self.project.encode())]


class PublicationQueue:
    """Publications waiting for the publisher, which takes them all at once; full at
    `max_count` publications or `max_bytes` of documents."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._items: list[Publication] = []
        self._bytes = 0
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._not_empty = asyncio.Event()
        self._has_room = asyncio.Event()
        # The batch the publisher took, until it is `done` with it.
        self._taken = 0
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def unsettled(self) -> int:
        """Publications queued or in the publisher's hands."""
        return len(self._items) + self._taken

    @property
    def bytes(self) -> int:
        return self._bytes

    def full(self) -> bool:
        return len(self._items) >= self._max_count or self._bytes >= self._max_bytes

    async def room(self) -> None:
        """Return once the queue is not full."""
        while self.full():
            self._has_room.clear()
            await self._has_room.wait()

    def put(self, publication: Publication) -> None:
        self._items.append(publication)
        self._bytes += publication.size
        self._not_empty.set()
        self._settled.clear()

    async def take_all(self) -> list[Publication]:
        """Everything queued, once something is."""
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        batch, self._items, self._bytes = self._items, [], 0
        self._taken = len(batch)
        self._has_room.set()
        return batch

    def done(self, unsent: list[Publication]) -> None:
        """The publisher is through with the batch it took; `unsent`, what of it failed, goes
        back ahead of what came since."""
        self._taken = 0
        if unsent:
            self._items[:0] = unsent
            self._bytes += sum(p.size for p in unsent)
            self._not_empty.set()
        elif not self._items:
            self._settled.set()

    async def settled(self) -> None:
        """Return once no publication is `unsettled`."""
        await self._settled.wait()
