"""The trace of each run this gateway process saw lately."""

from __future__ import annotations

import uuid
from collections import OrderedDict

_DIRECTORY_CAPACITY = 50_000


class RunDirectory:
    """The trace of each run this process saw lately. LangSmith's simple path lets a child run
    or a patch leave out trace_id and dotted_order (its server looks the run up); this is the
    gateway's bounded memory of it, so such a request succeeds when the run's post came
    through the same gateway process."""

    def __init__(self, capacity: int = _DIRECTORY_CAPACITY) -> None:
        self._traces: OrderedDict[int, uuid.UUID] = OrderedDict()
        self._capacity = capacity

    def remember(self, run_id: uuid.UUID, trace_id: uuid.UUID) -> None:
        self._traces[run_id.int] = trace_id
        self._traces.move_to_end(run_id.int)
        if len(self._traces) > self._capacity:
            self._traces.popitem(last=False)

    def trace_of(self, run_id: uuid.UUID) -> uuid.UUID | None:
        return self._traces.get(run_id.int)
