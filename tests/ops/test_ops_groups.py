"""Consumer-group lag: end offset minus committed offset, per partition, for tracebus groups."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import TopicPartition

from ops.ops_helpers import commit_offsets, write_records
from tracebus.config import KafkaSettings
from tracebus.ops import GroupStatus, group_statuses


def status_of(statuses: list[GroupStatus], group: str) -> GroupStatus:
    return next(status for status in statuses if status.group == group)


def test_sink_group_lag_counts_from_the_committed_offsets(kafka: KafkaSettings) -> None:
    group = f"tracebus-sink-test{uuid.uuid4().hex[:6]}"
    write_records(kafka.bootstrap_servers, kafka.traces_topic, {0: 5, 1: 3, 2: 4})
    topic = kafka.traces_topic
    commit_offsets(
        kafka.bootstrap_servers, group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 3}
    )

    status = status_of(asyncio.run(group_statuses(kafka)), group)

    assert status.role == f"sink:{group.removeprefix('tracebus-sink-')}"
    assert status.topics == [topic]
    # Partition 2 has nothing committed: a new member would read it from the log start.
    assert [(p.partition, p.committed, p.bounds.end, p.lag) for p in status.partitions] == [
        (0, 2, 5, 3),
        (1, 3, 3, 0),
        (2, None, 4, 4),
        (3, None, 0, 0),
    ]
    assert status.lag == 7
    assert status.members == 0


def test_the_stream_group_reads_events_and_other_groups_what_they_committed(
    kafka: KafkaSettings,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    stream_group, other_group = f"stream-{suffix}", f"mine-{suffix}"
    write_records(kafka.bootstrap_servers, kafka.events_topic, {3: 6})
    write_records(kafka.bootstrap_servers, kafka.dead_letter_topic, {0: 2})
    commit_offsets(
        kafka.bootstrap_servers, stream_group, {TopicPartition(kafka.events_topic, 3): 1}
    )
    commit_offsets(
        kafka.bootstrap_servers, other_group, {TopicPartition(kafka.dead_letter_topic, 0): 1}
    )

    statuses = asyncio.run(group_statuses(kafka, stream_group, [other_group, "never-seen"]))

    stream = status_of(statuses, stream_group)
    assert (stream.role, stream.topics, stream.lag) == ("stream", [kafka.events_topic], 5)
    other = status_of(statuses, other_group)
    assert (other.role, other.topics, other.lag) == ("other", [kafka.dead_letter_topic], 1)
    never_seen = status_of(statuses, "never-seen")
    assert (never_seen.partitions, never_seen.has_commits) == ([], False)
