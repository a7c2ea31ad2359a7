"""Consumer groups of tracebus on the broker: committed offsets, lag and members."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tracebus.config import KafkaSettings
from tracebus.kafka import describe_topics
from tracebus.kafka.connection import kafka_options
from tracebus.ops.topic_reader import FETCH_WAIT_MS, OffsetBounds, offset_bounds

SINK_GROUP_PREFIX = "tracebus-sink-"
DEFAULT_STREAM_APP_ID = "tracebus-stream"
STREAM_ROLE = "stream"
OTHER_ROLE = "other"


@contextlib.asynccontextmanager
async def admin_client(bootstrap_servers: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap_servers), client_id="tracebus-ops")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def committed_offsets(
    admin: AIOKafkaAdminClient, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The offset `group` committed on each partition; None where it committed none.

    The partitions are always named: asking for "all of the group's partitions" is optional in
    Kafka and answered with a malformed response by some compatible brokers (tansu)."""
    if not partitions:
        return {}
    offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
    committed: dict[TopicPartition, int | None] = {}
    for tp in partitions:
        found = offsets.get(tp)
        committed[tp] = found.offset if found is not None and found.offset >= 0 else None
    return committed


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: nothing committed, the group would start at the log start
    bounds: OffsetBounds

    @property
    def lag(self) -> int:
        position = self.bounds.start if self.committed is None else self.committed
        return max(self.bounds.end - max(position, self.bounds.start), 0)


@dataclass(frozen=True)
class GroupStatus:
    group: str
    role: str  # stream, sink:<destination> or other
    partitions: list[PartitionLag]
    members: int | None = None  # None: the broker did not say
    state: str | None = None

    @property
    def topics(self) -> list[str]:
        return sorted({p.topic for p in self.partitions})

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def has_commits(self) -> bool:
        return any(p.committed is not None for p in self.partitions)


def group_role(group: str, stream_app_id: str) -> str:
    if group == stream_app_id:
        return STREAM_ROLE
    if group.startswith(SINK_GROUP_PREFIX):
        return f"sink:{group[len(SINK_GROUP_PREFIX) :]}"
    return OTHER_ROLE


async def find_tracebus_groups(
    admin: AIOKafkaAdminClient, stream_app_id: str, extra: Iterable[str] = ()
) -> list[str]:
    """The stream's group and the `tracebus-sink-*` groups the broker lists, plus `extra`.

    Brokers list only groups with committed offsets (tansu) or may list none: the groups
    tracebus itself uses are probed by name as well (`group_statuses`)."""
    listed = {entry[0] for entry in await admin.list_consumer_groups()}
    ours = {g for g in listed if g == stream_app_id or g.startswith(SINK_GROUP_PREFIX)}
    return sorted(ours | set(extra))


async def _membership(admin: AIOKafkaAdminClient, group: str) -> tuple[int | None, str | None]:
    """Members and state of `group`, one group per request: some brokers garble batched ones."""
    try:
        (response,) = await admin.describe_consumer_groups([group])
        for described in response.groups:
            # (error_code, group, state, protocol_type, protocol, members, …) in every version
            error_code, name, state = described[:3]
            if error_code == 0 and name == group:
                return len(described[5]), state or None
    except (KafkaError, ValueError, IndexError):
        pass
    return None, None


async def _topic_bounds(
    bootstrap_servers: str, topics: list[str]
) -> dict[TopicPartition, OffsetBounds]:
    infos = await describe_topics(bootstrap_servers, topics)
    partitions = [
        TopicPartition(info.name, p)
        for info in infos
        if info.partitions
        for p in range(info.partitions)
    ]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(
        **kafka_options(bootstrap_servers),
        client_id="tracebus-ops",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    await consumer.start()
    try:
        return await offset_bounds(consumer, partitions)
    finally:
        await consumer.stop()


async def group_statuses(
    settings: KafkaSettings,
    stream_app_id: str = DEFAULT_STREAM_APP_ID,
    extra_groups: Iterable[str] = (),
    sink_destinations: Iterable[str] = (),
) -> list[GroupStatus]:
    """Lag and membership of every tracebus consumer group, on the topics it reads.

    The groups: those the broker lists, the stream's and `tracebus-sink-<destination>` for
    each of `sink_destinations` when they have committed offsets or members (probed one at a
    time), and `extra_groups` always, even with neither.

    The stream reads the events topic and sinks the traces topic; for any other group, the
    tracebus topics on which it has committed offsets."""
    topics = [settings.events_topic, settings.traces_topic, settings.dead_letter_topic]
    bounds = await _topic_bounds(settings.bootstrap_servers, topics)
    statuses = []
    async with admin_client(settings.bootstrap_servers) as admin:
        named = await find_tracebus_groups(admin, stream_app_id, extra_groups)
        probed = {stream_app_id} | {f"{SINK_GROUP_PREFIX}{d}" for d in sink_destinations}
        for group in sorted(set(named) | probed):
            status = await _group_status(admin, settings, group, stream_app_id, bounds)
            if group in named or status.has_commits or status.members:
                statuses.append(status)
    return statuses


async def _group_status(
    admin: AIOKafkaAdminClient,
    settings: KafkaSettings,
    group: str,
    stream_app_id: str,
    bounds: dict[TopicPartition, OffsetBounds],
) -> GroupStatus:
    role = group_role(group, stream_app_id)
    committed = await committed_offsets(admin, group, list(bounds))
    if role == STREAM_ROLE:
        reads = {settings.events_topic}
    elif role == OTHER_ROLE:
        reads = {tp.topic for tp, offset in committed.items() if offset is not None}
    else:
        reads = {settings.traces_topic}
    lags = [
        PartitionLag(tp.topic, tp.partition, committed.get(tp), bound)
        for tp, bound in sorted(bounds.items())
        if tp.topic in reads
    ]
    members, state = await _membership(admin, group)
    return GroupStatus(group, role, lags, members, state)
