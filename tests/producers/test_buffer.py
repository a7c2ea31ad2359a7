"""The bounded buffer between app threads and the sender."""

from __future__ import annotations

from tracebus.producers.buffer import EventBuffer


def entry(name: str, size: int = 100) -> tuple[str, bytes, int]:
    return ("t", name.encode(), size)


def test_the_oldest_waiting_events_are_dropped_and_counted_when_full() -> None:
    buffer = EventBuffer(max_bytes=300)
    for name in "abcde":
        buffer.put(entry(name))
    stats = buffer.stats()
    assert (stats.queued_events, stats.dropped_events, stats.pending_bytes) == (3, 2, 300)
    assert [e[1] for e in buffer.take(10_000, 10)] == [b"c", b"d", b"e"]


def test_in_flight_events_count_against_the_bound_and_return_in_front_on_failure() -> None:
    buffer = EventBuffer(max_bytes=300)
    buffer.put(entry("a"))
    buffer.put(entry("b"))
    in_flight = buffer.take(10_000, 10)
    buffer.put(entry("c"))
    buffer.put(entry("d"))  # a and b are in flight: c, the oldest waiting, makes room
    assert buffer.stats().dropped_events == 1
    buffer.requeue(in_flight)  # a failed send comes back in front, in order
    assert [e[1] for e in buffer.take(10_000, 10)] == [b"a", b"b", b"d"]
    assert buffer.stats().dropped_events == 1


def test_take_respects_byte_and_count_limits_but_always_moves_one() -> None:
    buffer = EventBuffer(max_bytes=10_000)
    for name in "abcd":
        buffer.put(entry(name, 400))
    assert len(buffer.take(max_bytes=100, max_events=10)) == 1
    assert len(buffer.take(max_bytes=900, max_events=10)) == 2
    assert len(buffer.take(max_bytes=10_000, max_events=10)) == 1
    assert buffer.take(10_000, 10) == []
    assert not buffer.empty()
