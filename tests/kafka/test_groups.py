"""A stopping consumer leaves its group in whichever generation it joined, so that the
partitions it held go to the others at once rather than when its session times out."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from conftest import fresh_settings
from whereabouts import group_status

from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.groups import leave_on_stop


def test_a_consumer_stopped_in_its_groups_first_generation_leaves_the_group(
    broker: EmbeddedBroker,
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    group = f"group-of-{settings.events_topic}"

    async def join_and_stop() -> int:
        consumer = AIOKafkaConsumer(
            settings.events_topic,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=group,
            session_timeout_ms=4_000,
            heartbeat_interval_ms=1_000,
        )
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                while not consumer.assignment():
                    await asyncio.sleep(0.05)
            leave_on_stop(consumer)
            # The embedded broker numbers a group's first generation 0, where aiokafka would
            # not leave the group.
            return consumer._coordinator.generation
        finally:
            await consumer.stop()

    generation = asyncio.run(join_and_stop())
    status = asyncio.run(group_status(settings, group))
    assert (generation, status.members) == (0, 0)
