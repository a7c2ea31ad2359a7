"""The worker's in-memory view of which traces need attention when, and how much is open."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from tracebus.schemas import Completion

FORGET_NOW = "forget_now"
# The reasons the memory bound gives (`DeadlineIndex.pop_over_bound`), as opposed to deadlines.
MEMORY_BOUND = frozenset({FORGET_NOW, Completion.EVICTED})
# A heap of lazily deleted entries is rebuilt from the live ones past this many per live one.
_STALE_PER_LIVE = 2
_MIN_HEAP_TO_COMPACT = 1024


@dataclass(frozen=True, slots=True)
class Due:
    trace_id: str
    partition: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Entry:
    """What a trace's heap items stand for while their sequence is the entry's."""

    sequence: int
    partition: int
    reason: str
    size: int
    is_open: bool


class DeadlineIndex:
    """Deadlines of the traces this worker owns, with the size of the open ones.

    Heaps with lazy deletion: replacing an entry leaves its old heap items behind, ignored when
    they surface, so every update and every pop stays O(log n). Three heaps: by deadline; and,
    for the memory bound, open traces and published traces still holding content, each by
    their first event (oldest first). At the bound, the worker is at it for every trace it
    takes in: the late window keeps a busy worker's published traces up to the byte bound."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_deadline: list[tuple[int, int, str]] = []
        self._oldest_open: list[tuple[int, int, str]] = []
        self._oldest_held: list[tuple[int, int, str]] = []
        self._sequence = 0
        self.open_count = 0  # traces still being assembled (not those kept after publication)
        self.open_bytes = 0
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

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
        sequence = self._sequence
        self._entries[trace_id] = _Entry(sequence, partition, reason, size, is_open)
        self.held_bytes += size
        self._push(self._by_deadline, due_ns, sequence, trace_id)
        if is_open:
            self.open_count += 1
            self.open_bytes += size
            self._push(self._oldest_open, first_ns, sequence, trace_id)
        elif size:
            self._push(self._oldest_held, first_ns, sequence, trace_id)

    def discard(self, trace_id: str) -> None:
        entry = self._entries.pop(trace_id, None)
        if entry is not None:
            self.held_bytes -= entry.size
            if entry.is_open:
                self.open_count -= 1
                self.open_bytes -= entry.size

    def pop_due(self, now_ns: int, again_ns: int) -> list[Due]:
        """The traces whose deadline has passed. They stay indexed, due again at `again_ns`:
        the worker acts on a due trace only when its `close` arrives, behind whatever its
        partition holds before it, and meanwhile the trace is still held (and counted by the
        bound, which may publish it sooner). A `close` lost on the way is sent again."""
        due = []
        heap = self._by_deadline
        while heap and heap[0][0] <= now_ns:
            _, sequence, trace_id = heapq.heappop(heap)
            entry = self._live(trace_id, sequence)
            if entry is not None:
                due.append(Due(trace_id, entry.partition, entry.reason))
                self._push(heap, again_ns, sequence, trace_id)
        return due

    def pop_over_bound(self, max_open_traces: int, max_held_bytes: int) -> Due | None:
        """What the memory bound gives up next; None within it. Past the count of open traces,
        the oldest open trace (published early); past the bytes, the oldest published trace
        kept for late events (forgotten early), else the oldest open trace."""
        if self.open_count > max_open_traces:
            return self._pop_oldest(self._oldest_open, Completion.EVICTED)
        if self.held_bytes > max_held_bytes:
            return self._pop_oldest(self._oldest_held, FORGET_NOW) or self._pop_oldest(
                self._oldest_open, Completion.EVICTED
            )
        return None

    def clear(self) -> None:
        self._entries.clear()
        self._by_deadline.clear()
        self._oldest_open.clear()
        self._oldest_held.clear()
        self.open_count = 0
        self.open_bytes = 0
        self.held_bytes = 0

    def _live(self, trace_id: str, sequence: int) -> _Entry | None:
        """The entry a heap item stands for; None for an item left behind."""
        entry = self._entries.get(trace_id)
        return entry if entry is not None and entry.sequence == sequence else None

    def _pop_oldest(self, heap: list[tuple[int, int, str]], reason: str) -> Due | None:
        while heap:
            _, sequence, trace_id = heapq.heappop(heap)
            entry = self._live(trace_id, sequence)
            if entry is not None:
                self.discard(trace_id)
                return Due(trace_id, entry.partition, reason)
        return None

    def _push(
        self, heap: list[tuple[int, int, str]], key: int, sequence: int, trace_id: str
    ) -> None:
        """Push, first dropping the items left behind once they outnumber the live ones: an
        open trace leaves one per record that updated it, and a bound never reached (or a
        deadline far off) leaves them in place."""
        if len(heap) >= _MIN_HEAP_TO_COMPACT and len(heap) > _STALE_PER_LIVE * len(self._entries):
            heap[:] = [item for item in heap if self._live(item[2], item[1]) is not None]
            heapq.heapify(heap)
        heapq.heappush(heap, (key, sequence, trace_id))
