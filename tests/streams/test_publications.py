"""The publisher's queue bounds the traces on their way out, by count and by bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from tracebus.streams.publications import Publication, PublicationQueue


def publication(trace_id: str, size: int) -> Publication:
    marked: asyncio.Future = asyncio.get_running_loop().create_future()  # type: ignore[type-arg]
    return Publication(trace_id, 0, 1, [b"x" * size], True, marked)


async def pending(awaitable: asyncio.Future) -> bool:  # type: ignore[type-arg]
    """Whether `awaitable` is still pending once everything else ready has run."""
    for _ in range(10):
        await asyncio.sleep(0)
    return not awaitable.done()


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 5))


def test_the_agent_waits_for_room_once_the_queue_holds_its_count() -> None:
    async def scenario() -> None:
        queue = PublicationQueue(max_count=2, max_bytes=1_000)
        queue.put(publication("a", 10))
        await queue.room()  # room for one more
        queue.put(publication("b", 10))
        room = asyncio.ensure_future(queue.room())
        assert await pending(room)
        assert [p.trace_id for p in await queue.take_all()] == ["a", "b"]
        await room

    run(scenario())


def test_the_agent_waits_for_room_once_the_queue_holds_its_bytes() -> None:
    async def scenario() -> None:
        queue = PublicationQueue(max_count=100, max_bytes=1_000)
        queue.put(publication("large", 1_000))
        assert queue.bytes == 1_000
        room = asyncio.ensure_future(queue.room())
        assert await pending(room)
        await queue.take_all()
        await room
        assert queue.bytes == 0

    run(scenario())


def test_the_publisher_waits_for_a_publication_and_takes_all_there_are() -> None:
    async def scenario() -> None:
        queue = PublicationQueue(max_count=10, max_bytes=1_000)
        taken = asyncio.ensure_future(queue.take_all())
        assert await pending(taken)
        queue.put(publication("a", 1))
        queue.put(publication("b", 1))
        assert [p.trace_id for p in await taken] == ["a", "b"]

    run(scenario())


def test_a_batch_that_failed_goes_back_ahead_of_later_publications() -> None:
    async def scenario() -> None:
        queue = PublicationQueue(max_count=10, max_bytes=1_000)
        queue.put(publication("a", 5))
        failed = await queue.take_all()
        queue.put(publication("b", 7))
        queue.done(failed)
        assert queue.bytes == 12
        assert [p.trace_id for p in await queue.take_all()] == ["a", "b"]

    run(scenario())


def test_the_queue_settles_once_the_publisher_is_done_with_everything_queued() -> None:
    async def scenario() -> None:
        queue = PublicationQueue(max_count=10, max_bytes=1_000)
        await queue.settled()  # nothing queued
        queue.put(publication("a", 1))
        settled = asyncio.ensure_future(queue.settled())
        batch = await queue.take_all()
        assert queue.unsettled == 1, "taken, not yet sent"
        assert await pending(settled)
        queue.done(batch)
        assert await pending(settled), "what failed is queued again"
        await queue.take_all()
        queue.done([])
        await settled
        assert queue.unsettled == 0

    run(scenario())
