"""Which offsets may be committed: only up to the highest contiguous record that is done."""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Records of one partition taken for delivery, in offset order, and those done (delivered
    or dead-lettered). A record done out of order waits for every record taken before it, so a
    commit never skips an undelivered record; gaps between offsets need no special case
    because only offsets actually taken are tracked."""

    def __init__(self) -> None:
        self._taken: deque[int] = deque()
        self._done: set[int] = set()
        self.last_done: int | None = None

    def taken(self, offset: int) -> None:
        self._taken.append(offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)
        self.last_done = offset if self.last_done is None else max(self.last_done, offset)

    @property
    def pending(self) -> int:
        return len(self._taken)

    def committable(self) -> int | None:
        """The offset to commit (the next to read), or None if nothing new is contiguous."""
        last = None
        while self._taken and self._taken[0] in self._done:
            last = self._taken.popleft()
            self._done.discard(last)
        return None if last is None else last + 1
