"""The worker's index of deadlines and of what the memory bound gives up, and in which order.
The worker tests cover the bound end to end (`test_stream_overflow.py`); these pin the order
and that an index under constant updates keeps its size."""

from __future__ import annotations

from tracebus.schemas import Completion
from tracebus.streams.index import FORGET_NOW, DeadlineIndex, Due

KIB = 1024
UNBOUNDED = 10**9


def open_trace(index: DeadlineIndex, trace_id: str, first_ns: int, size: int = KIB) -> None:
    index.set(trace_id, 10**18, Completion.ROOT_ENDED, 0, size, first_ns)


def held_trace(index: DeadlineIndex, trace_id: str, first_ns: int, size: int = KIB) -> None:
    """A published trace kept for late events (`size` 0: its content was forgotten)."""
    index.set(trace_id, 10**18, "forget", 0, size, first_ns, is_open=False)


def drain(index: DeadlineIndex, max_open: int, max_bytes: int) -> list[Due]:
    given_up = []
    while (due := index.pop_over_bound(max_open, max_bytes)) is not None:
        given_up.append(due)
    return given_up


def test_deadlines_come_due_in_order_and_a_new_deadline_replaces_the_old() -> None:
    index = DeadlineIndex()
    index.set("a", 30, Completion.IDLE_TIMEOUT, 1, KIB, 1)
    index.set("b", 10, Completion.ROOT_ENDED, 2, KIB, 2)
    index.set("a", 20, Completion.ROOT_ENDED, 1, KIB, 1)

    assert index.pop_due(5, again_ns=1_000) == []
    assert index.pop_due(25, again_ns=1_000) == [
        Due("b", 2, Completion.ROOT_ENDED),
        Due("a", 1, Completion.ROOT_ENDED),
    ]
    assert index.pop_due(100, again_ns=2_000) == []


def test_due_traces_stay_held_and_counted_and_come_due_again_until_they_are_acted_on() -> None:
    """The worker acts on a due trace when its `close` arrives, behind a backlog maybe, or
    never if it is lost: meanwhile the bound still sees the trace, and the close is sent again."""
    index = DeadlineIndex()
    open_trace(index, "a", 1)
    index.set("b", 10, Completion.ROOT_ENDED, 0, KIB, 2)
    assert index.pop_due(10, again_ns=50) == [Due("b", 0, Completion.ROOT_ENDED)]

    assert len(index) == 2 and index.open_count == 2 and index.held_bytes == 2 * KIB
    assert drain(index, max_open=1, max_bytes=UNBOUNDED) == [Due("a", 0, Completion.EVICTED)]
    assert index.pop_due(50, again_ns=90) == [Due("b", 0, Completion.ROOT_ENDED)]
    index.discard("b")  # its close arrived: the worker publishes it
    assert index.pop_due(90, again_ns=200) == [] and len(index) == 0


def test_within_the_bound_nothing_is_given_up() -> None:
    index = DeadlineIndex()
    open_trace(index, "a", 1)
    held_trace(index, "b", 2)

    assert index.pop_over_bound(max_open_traces=1, max_held_bytes=2 * KIB) is None
    assert len(index) == 2


def test_past_the_count_of_open_traces_the_oldest_open_ones_are_published_early() -> None:
    index = DeadlineIndex()
    held_trace(index, "published", 1)
    for n in range(5):
        open_trace(index, f"open-{n}", 10 + n)

    given_up = drain(index, max_open=3, max_bytes=UNBOUNDED)

    # Forgetting published traces would not bring the count of open ones down.
    assert given_up == [
        Due("open-0", 0, Completion.EVICTED),
        Due("open-1", 0, Completion.EVICTED),
    ]
    assert "published" in index and index.open_count == 3


def test_past_the_bytes_published_traces_are_forgotten_oldest_first_then_open_ones_published() -> (
    None
):
    index = DeadlineIndex()
    open_trace(index, "open-old", 1)
    held_trace(index, "held-new", 5)
    held_trace(index, "held-old", 2)
    held_trace(index, "already-forgotten", 0, size=0)
    open_trace(index, "open-new", 6)

    assert drain(index, UNBOUNDED, max_bytes=2 * KIB) == [
        Due("held-old", 0, FORGET_NOW),
        Due("held-new", 0, FORGET_NOW),
    ]
    assert drain(index, UNBOUNDED, max_bytes=KIB // 2) == [
        Due("open-old", 0, Completion.EVICTED),
        Due("open-new", 0, Completion.EVICTED),
    ]
    assert index.held_bytes == 0
    assert "already-forgotten" in index


def test_an_updated_trace_is_given_up_once_in_its_current_state() -> None:
    index = DeadlineIndex()
    open_trace(index, "a", 1)
    open_trace(index, "b", 2)
    open_trace(index, "a", 1, size=3 * KIB)  # another record
    held_trace(index, "a", 1, size=3 * KIB)  # published since

    assert drain(index, max_open=0, max_bytes=UNBOUNDED) == [Due("b", 0, Completion.EVICTED)]
    assert drain(index, UNBOUNDED, max_bytes=0) == [Due("a", 0, FORGET_NOW)]
    assert drain(index, 0, 0) == []


def test_an_index_updated_without_end_keeps_a_size_in_proportion_to_its_traces() -> None:
    """Every update leaves heap items behind; a worker that never reaches its bound never pops
    them, so the index drops them itself."""
    index = DeadlineIndex()
    for record in range(50_000):
        trace = record % 100
        open_trace(index, f"t{trace}", trace, size=record)
        if record % 7 == 0:
            held_trace(index, f"t{trace}", trace)
        index.pop_due(0, again_ns=1)

    heaps = (index._by_deadline, index._oldest_open, index._oldest_held)
    assert max(len(heap) for heap in heaps) <= 1_025  # compacted past 1,024 items
    assert len(index) == 100
    given_up = drain(index, 0, 0)
    assert sorted(due.trace_id for due in given_up) == sorted(f"t{n}" for n in range(100))
