"""Operating a tracebus deployment: dead letters, redrive, consumer-group lag, worker metrics.

The `tracebus dlq` and `tracebus status` commands are thin views over these functions."""

from tracebus.ops.deadletters import (
    DeadLetter,
    DeadLetterPage,
    DeadLetterSummary,
    Source,
    StageSummary,
    dead_letter_at,
    list_dead_letters,
    summarize_by_stage,
)
from tracebus.ops.groups import GroupStatus, PartitionLag, group_statuses
from tracebus.ops.redrive import (
    DEFAULT_PROGRESS_GROUP,
    OffsetRange,
    RedriveFailed,
    RedriveReport,
    RedriveRequest,
    awaiting_redrive,
    redrive_dead_letters,
)
from tracebus.ops.scrape import WorkerReport, scrape_workers
from tracebus.ops.topic_reader import MissingTopicError

__all__ = [
    "DEFAULT_PROGRESS_GROUP",
    "DeadLetter",
    "DeadLetterPage",
    "DeadLetterSummary",
    "GroupStatus",
    "MissingTopicError",
    "OffsetRange",
    "PartitionLag",
    "RedriveFailed",
    "RedriveReport",
    "RedriveRequest",
    "Source",
    "StageSummary",
    "WorkerReport",
    "awaiting_redrive",
    "dead_letter_at",
    "group_statuses",
    "list_dead_letters",
    "redrive_dead_letters",
    "scrape_workers",
    "summarize_by_stage",
]
