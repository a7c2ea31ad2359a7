"""Where the records of traces a test is missing sit in the topics, against the offsets each
consumer group committed: what a failure needs to tell a record never written from one a group
skipped or has not reached yet."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from tracebus.config import KafkaSettings
from tracebus.ops.groups import GroupStatus, group_statuses
from tracebus.ops.topic_reader import TopicReader


def stream_app_id(settings: KafkaSettings) -> str:
    """The stream's app id (its consumer group) in tests: one per set of topics."""
    return f"stream-{settings.events_topic}"


async def group_status(settings: KafkaSettings, group: str) -> GroupStatus:
    """`group`'s committed and end offsets on the topic it reads (events for the stream,
    traces for a sink)."""
    app_id = stream_app_id(settings)
    statuses = await group_statuses(settings, stream_app_id=app_id, extra_groups=[group])
    (status,) = [s for s in statuses if s.group == group]
    return status


async def whole_topic(settings: KafkaSettings, topic: str) -> list[ConsumerRecord]:
    async with TopicReader(settings.bootstrap_servers, topic) as reader:
        bounds = await reader.bounds()
        return [r for tp, b in bounds.items() async for r in reader.read(tp, b.start, b.end)]


async def whereabouts(settings: KafkaSettings, missing: set[str], groups: list[str]) -> str:
    """Per partition of the topic each of `groups` reads: its committed and end offsets, and
    the offsets of the records keyed by a `missing` trace id."""
    lines = [f"{len(missing)} traces missing, e.g. {sorted(missing)[:5]}"]
    for group in groups:
        status = await group_status(settings, group)
        records = {topic: await whole_topic(settings, topic) for topic in status.topics}
        for p in status.partitions:
            found = [
                r.offset
                for r in records[p.topic]
                if r.partition == p.partition and r.key is not None and r.key.decode() in missing
            ]
            lines.append(
                f"{p.topic}[{p.partition}] read by {group}: committed {p.committed}, "
                f"end {p.bounds.end}; records of missing traces at {found}"
            )
    return "\n".join(lines)
