"""Where each observation sits in LangSmith's run tree: run ids, parents and dotted orders.

LangSmith rejects a whole ingest batch when one run is inconsistent (trace id not the first
dotted-order segment, a root with several segments, a child ordered before its parent), so the
tree is checked here, before anything is sent."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tracebus.schemas import TraceDocument
from tracebus.sinks.langsmith.ids import run_uuid, trace_uuid

DOTTED_ORDER_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TreeError(ValueError):
    """The observations of a document do not form one tree LangSmith would accept."""


@dataclass(frozen=True)
class Placement:
    run_id: uuid.UUID
    parent_run_id: uuid.UUID | None
    dotted_order: str
    start_time: datetime  # clamped to the parent's start, as the dotted order requires


@dataclass(frozen=True)
class _Node:
    parent_id: str | None
    start_time_unix_nano: int


def utc_datetime(unix_nano: int) -> datetime:
    """Nanoseconds since the epoch as an aware UTC datetime, truncated to microseconds."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


def dotted_order_segment(start_time: datetime, run_id: uuid.UUID) -> str:
    return start_time.strftime(DOTTED_ORDER_TIME_FORMAT) + str(run_id)


def place_runs(document: TraceDocument) -> dict[str, Placement]:
    """Placement of every observation and ancestor of `document`, keyed by observation id.

    Raises TreeError naming the problem: an id given twice, a parent that is neither in the
    document nor in its ancestors, no root or several roots, or a cycle."""
    nodes = _nodes(document)
    root_id = _single_root(document, nodes)
    placements: dict[str, Placement] = {}
    for observation_id in nodes:
        _place(document.trace_id, observation_id, root_id, nodes, placements)
    first_segment_uuid = placements[root_id].dotted_order[-36:]
    if first_segment_uuid != str(trace_uuid(document.trace_id)):
        raise TreeError("the root run's dotted order does not start with the trace id")
    return placements


def _nodes(document: TraceDocument) -> dict[str, _Node]:
    nodes: dict[str, _Node] = {}
    entries = [*document.ancestors, *document.observations]
    for entry in entries:
        if entry.observation_id in nodes:
            raise TreeError(f"observation {entry.observation_id} appears more than once")
        nodes[entry.observation_id] = _Node(entry.parent_observation_id, entry.start_time_unix_nano)
    if not nodes:
        raise TreeError("the document has no observations")
    for observation_id, node in nodes.items():
        if node.parent_id is not None and node.parent_id not in nodes:
            raise TreeError(
                f"parent {node.parent_id} of observation {observation_id} is neither in the "
                "document nor in its ancestors"
            )
    return nodes


def _single_root(document: TraceDocument, nodes: dict[str, _Node]) -> str:
    roots = [observation_id for observation_id, node in nodes.items() if node.parent_id is None]
    if not roots:
        raise TreeError("no root: every observation has a parent")
    if len(roots) > 1:
        raise TreeError(f"{len(roots)} roots ({', '.join(roots)}); a trace has exactly one")
    declared = document.root_observation_id
    if declared is not None and declared != roots[0]:
        raise TreeError(f"root_observation_id is {declared} but the root is {roots[0]}")
    return roots[0]


def _place(
    trace_id: str,
    observation_id: str,
    root_id: str,
    nodes: dict[str, _Node],
    placements: dict[str, Placement],
) -> None:
    """Place `observation_id` and its unplaced ancestors, from the top down."""
    chain: list[str] = []
    current: str | None = observation_id
    while current is not None and current not in placements:
        if current in chain:
            raise TreeError(f"cycle through observation {current}")
        chain.append(current)
        current = nodes[current].parent_id
    for member in reversed(chain):
        node = nodes[member]
        own_start = utc_datetime(node.start_time_unix_nano)
        if member == root_id:
            run_id = trace_uuid(trace_id)
            placements[member] = Placement(
                run_id, None, dotted_order_segment(own_start, run_id), own_start
            )
            continue
        assert node.parent_id is not None  # only the root has no parent
        parent = placements[node.parent_id]
        start = max(own_start, parent.start_time)
        run_id = run_uuid(trace_id, member, node.start_time_unix_nano)
        placements[member] = Placement(
            run_id,
            parent.run_id,
            f"{parent.dotted_order}.{dotted_order_segment(start, run_id)}",
            start,
        )
