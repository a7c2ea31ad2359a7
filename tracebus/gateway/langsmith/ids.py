"""Where a run sits: its trace and parent, checked against its dotted order (or found in the
run directory), and its W3C ids. The trace id is the LangSmith trace UUID's 32 hex digits, so a
trace's root run keeps its id through tracebus to the LangSmith sink; the observation id is a
hash of the run UUID (also applied to parent and feedback run ids, so the tree holds)."""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tracebus.gateway.langsmith.checks import Json, invalid, optional_uuid
from tracebus.gateway.langsmith.directory import RunDirectory
from tracebus.gateway.timestamps import unix_nano

DOTTED_ORDER_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
_SEGMENT_TIME_LENGTH = len("20240531T095804831161Z")
_OBSERVATION_ID_BYTES = 8
# The segment time as the SDK writes it: fixed width, ASCII digits.
_SEGMENT_TIME = re.compile(
    r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{6})Z"
)


def observation_id(run_id: uuid.UUID) -> str:
    """The W3C span id of a run: a hash of its UUID. Not its first 8 bytes, which in a UUIDv7
    are a millisecond timestamp and 12 random bits: runs started together would collide."""
    digest = hashlib.blake2b(run_id.bytes, digest_size=_OBSERVATION_ID_BYTES).hexdigest()
    return digest if digest != "0" * 16 else "0" * 15 + "1"


@dataclass(frozen=True)
class RunIds:
    """A run's id, with its trace's and its parent's."""

    run: uuid.UUID
    trace: uuid.UUID
    parent: uuid.UUID | None
    dotted_start_ns: int | None  # the run's start as its dotted_order says

    @property
    def is_root(self) -> bool:
        return self.run == self.trace


def resolve_ids(
    run_id: uuid.UUID, run: Json, posted: bool, directory: RunDirectory, label: str
) -> RunIds:
    """The run's trace and parent, from its ids and dotted order, else from the directory (a run
    posted without a parent is its trace's root); GatewayError(422) when they contradict each
    other or the trace cannot be found."""
    parent = optional_uuid(run.get("parent_run_id"), label, "parent_run_id")
    trace = optional_uuid(run.get("trace_id"), label, "trace_id")
    dotted_order = run.get("dotted_order")
    dotted_start_ns = None
    if dotted_order is not None:
        segments = _dotted_order(dotted_order, label)
        if segments[-1][1] != run_id:
            raise invalid(
                f"{label}: the last part of dotted_order {dotted_order} is not the run id"
            )
        if trace is not None and segments[0][1] != trace:
            raise invalid(f"{label}: trace_id {trace} does not match first part of dotted_order")
        if parent is None and posted and len(segments) != 1:
            raise invalid(f"{label}: dotted_order must contain a single part for root runs")
        if parent is not None and len(segments) < 2:
            raise invalid(f"{label}: dotted_order must contain at least two parts for child runs")
        if parent is not None and segments[-2][1] != parent:
            raise invalid(
                f"{label}: parent_run_id {parent} is not the second-to-last part of dotted_order"
            )
        trace = segments[0][1]
        dotted_start_ns = segments[-1][0]
    if trace is None:
        if posted and parent is None:
            trace = run_id
        else:
            trace = directory.trace_of(run_id)
            if trace is None and parent is not None:
                trace = directory.trace_of(parent)
    if trace is None:
        raise invalid(
            f"{label}: trace_id (or dotted_order) is required: this gateway has not seen "
            "the run's trace"
        )
    if trace.int == 0:
        raise invalid(f"{label}: the nil UUID is no trace id")
    if posted and parent is None and trace != run_id:
        raise invalid(
            f"{label}: a run without parent_run_id is a root run, whose id must be its "
            f"trace_id ({trace})"
        )
    if parent is not None and run_id == trace:
        raise invalid(f"{label}: the root run of trace {trace} cannot have a parent_run_id")
    return RunIds(run_id, trace, parent, dotted_start_ns)


def _dotted_order(value: Any, label: str) -> list[tuple[int, uuid.UUID]]:
    """(start in ns, run id) of each segment of a dotted order."""
    if not isinstance(value, str) or not value:
        raise invalid(f"{label}: dotted_order must be a string")
    try:
        return [_segment(segment) for segment in value.split(".")]
    except ValueError:
        raise invalid(
            f"{label}: invalid dotted_order {value!r}: each part is "
            f"{DOTTED_ORDER_TIME_FORMAT} followed by the run's UUID"
        ) from None


# Every run of a trace repeats its ancestors' segments, and strptime is slow: parse each once.
@functools.lru_cache(maxsize=4096)
def _segment(segment: str) -> tuple[int, uuid.UUID]:
    """(start in ns, run id) of one dotted-order segment; ValueError when it is not one."""
    run_id = uuid.UUID(segment[_SEGMENT_TIME_LENGTH:])
    return _segment_time(segment[:_SEGMENT_TIME_LENGTH]), run_id


def _segment_time(text: str) -> int:
    """The start in ns of a segment's time. Times as the SDK writes them are read directly;
    anything else goes through strptime, which also takes (or refuses) the odd forms."""
    match = _SEGMENT_TIME.fullmatch(text)
    if match is not None:
        year, month, day, hour, minute, second, micro = map(int, match.groups())
        try:
            started = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
        except ValueError:
            pass  # out of range, such as a leap second: strptime decides
        else:
            return unix_nano(started)
    started = datetime.strptime(text, DOTTED_ORDER_TIME_FORMAT)
    return unix_nano(started.replace(tzinfo=UTC))
