"""Leaving a consumer group on every Kafka-compatible broker.

aiokafka leaves a group when its consumer stops only from the group's generation 1 on: Apache
Kafka numbers a group's generations from 1, tansu (the embedded broker) from 0. A worker stopped
in a group's first generation therefore kept its partitions until its session timed out: with a
10 s session, the worker started in its place was ready 20 s after it started, 7 s once the
stopped one leaves."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger("tracebus.kafka")


def leave_on_stop(consumer: AIOKafkaConsumer) -> None:
    """Make the consumer leave its group when it stops, in any generation it joined. Call it
    once the consumer has started, before it stops. For dynamic members only (tracebus sets no
    group instance id): a static member must not leave on stop."""
    coordinator = consumer._coordinator
    if coordinator is None:  # not in a group
        return

    async def leave() -> None:
        # What aiokafka's own leave does, but for generation 0 too: a best-effort request.
        if coordinator.generation >= 0 and coordinator.member_id:
            request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
            try:
                await coordinator._send_req(request)
            except KafkaError as error:
                log.warning("leaving group %s failed: %r", coordinator.group_id, error)
            else:
                log.info("left group %s", coordinator.group_id)
        coordinator.reset_generation()

    coordinator._maybe_leave_group = leave
