"""The worker's in-memory view of which traces need attention when, and how much is open."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from tracebus.schemas import Completion

FORGET_NOW = "forget_now"
# The reasons the memory bound gives (`DeadlineIndex.pop_oldest`), as opposed to deadlines.
MEMORY_BOUND = frozenset({FORGET_NOW, Completion.EVICTED})


@dataclass(frozen=True, slots=True)
class Due:
    trace_id: str
    partition: int
    reason: str


class DeadlineIndex:
    """Deadlines of the traces this worker owns, with the size of the open ones.

    A heap with lazy deletion: replacing a deadline leaves the old heap entry behind, ignored
    when it surfaces, so updates stay O(log n)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._entries: dict[str, tuple[int, int, int, str, int, int]] = {}
        self._sequence = 0
        self._open: set[str] = set()
        self.open_bytes = 0
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def open_count(self) -> int:
        """Traces still being assembled (not those kept after publication)."""
        return len(self._open)

    def __contains__(self, trace_id: str) -> bool:
        return trace_id in self._entries

    def set(
        self,
        trace_id: str,
        due_ns: int,
        reason: str,
        partition: int,
        size: int,
        first_ns: int,
        is_open: bool = True,
    ) -> None:
        self.discard(trace_id)
        self._sequence += 1
        self._entries[trace_id] = (due_ns, self._sequence, partition, reason, size, first_ns)
        self.held_bytes += size
        if is_open:
            self._open.add(trace_id)
            self.open_bytes += size
        heapq.heappush(self._heap, (due_ns, self._sequence, trace_id))

    def discard(self, trace_id: str) -> None:
        entry = self._entries.pop(trace_id, None)
        if entry is not None:
            self.held_bytes -= entry[4]
            if trace_id in self._open:
                self._open.discard(trace_id)
                self.open_bytes -= entry[4]

    def pop_due(self, now_ns: int) -> list[Due]:
        due = []
        while self._heap and self._heap[0][0] <= now_ns:
            _, sequence, trace_id = heapq.heappop(self._heap)
            entry = self._entries.get(trace_id)
            if entry is not None and entry[1] == sequence:
                self.discard(trace_id)
                due.append(Due(trace_id, entry[2], entry[3]))
        return due

    def pop_oldest(self) -> Due | None:
        """What the memory bound gives up first: the oldest published trace kept for late
        events (forgotten early), else the oldest open trace (published early)."""
        published = {t for t in self._entries.keys() - self._open if self._entries[t][4]}
        candidates, reason = (
            (published, FORGET_NOW) if published else (self._open, Completion.EVICTED)
        )
        if not candidates:
            return None
        trace_id = min(candidates, key=lambda t: self._entries[t][5])
        entry = self._entries[trace_id]
        self.discard(trace_id)
        return Due(trace_id, entry[2], reason)

    def clear(self) -> None:
        self._heap.clear()
        self._entries.clear()
        self._open.clear()
        self.open_bytes = 0
        self.held_bytes = 0
