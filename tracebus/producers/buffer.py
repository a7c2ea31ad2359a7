"""The bounded in-memory buffer between app threads and the sender."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

# (trace id, payload, size): the payload is serialised event bytes, or an open observation
# whose snapshot the sender takes at send time (so a short span sends one event, not two).
Entry = tuple[str, Any, int]


@dataclass(frozen=True, slots=True)
class BufferStats:
    queued_events: int
    in_flight_events: int
    pending_bytes: int
    dropped_events: int


class EventBuffer:
    """FIFO of events bounded in bytes, counting events waiting and events being sent.

    When a new event would exceed the bound, the oldest waiting events are dropped and counted."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queue: deque[Entry] = deque()
        self._queued_bytes = 0
        self._in_flight_bytes = 0
        self._in_flight_events = 0
        self.dropped = 0
        self.accepted = 0

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def put(self, entry: Entry) -> None:
        with self._lock:
            self._queue.append(entry)
            self.accepted += 1
            self._queued_bytes += entry[2]
            if self._queued_bytes + self._in_flight_bytes > self.max_bytes:
                self._drop_oldest()

    def _drop_oldest(self) -> None:
        while self._queue and self._queued_bytes + self._in_flight_bytes > self.max_bytes:
            self._queued_bytes -= self._queue.popleft()[2]
            self.dropped += 1

    def take(self, max_bytes: int, max_events: int) -> list[Entry]:
        """Move up to the limits (at least one event) from the queue to in-flight."""
        taken: list[Entry] = []
        size = 0
        with self._lock:
            queue = self._queue
            while (
                queue and len(taken) < max_events and (not taken or size + queue[0][2] <= max_bytes)
            ):
                entry = queue.popleft()
                taken.append(entry)
                size += entry[2]
            self._queued_bytes -= size
            self._in_flight_bytes += size
            self._in_flight_events += len(taken)
        return taken

    def settle(self, entries: list[Entry]) -> None:
        """In-flight entries that are delivered (or discarded): forget them."""
        size = sum(entry[2] for entry in entries)
        with self._lock:
            self._in_flight_bytes -= size
            self._in_flight_events -= len(entries)

    def requeue(self, entries: list[Entry]) -> None:
        """Put in-flight entries back in front after a failed send, then enforce the bound."""
        size = sum(entry[2] for entry in entries)
        with self._lock:
            self._in_flight_bytes -= size
            self._in_flight_events -= len(entries)
            self._queue.extendleft(reversed(entries))
            self._queued_bytes += size
            self._drop_oldest()

    def stats(self) -> BufferStats:
        with self._lock:
            return BufferStats(
                queued_events=len(self._queue),
                in_flight_events=self._in_flight_events,
                pending_bytes=self._queued_bytes + self._in_flight_bytes,
                dropped_events=self.dropped,
            )

    def empty(self) -> bool:
        return not self._queue and not self._in_flight_events
