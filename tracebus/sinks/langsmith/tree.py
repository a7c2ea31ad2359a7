"""Where each observation sits in LangSmith's run tree: run ids, parents and dotted orders.

LangSmith wants exactly one root run per trace, whose id is the trace id, and rejects a whole
ingest batch when one run is inconsistent (trace id not the first dotted-order segment, a root
with several segments, a child ordered before its parent). The stream, though, delivers what the
app sent: an observation whose parent never arrived keeps that parent's id (flag `orphan`), and a
trace may have no observation without a parent, or several. So the tree is settled here, before
anything is sent:

- the root run is the declared `root_observation_id` (an observation of the document, an ancestor,
  or one in another part); else the only observation or ancestor without a parent; else a
  synthetic run made up for the trace (`RootKind.SYNTHETIC`, sent with the observations);
- an observation whose parent is in neither the document nor its ancestors, or that has no parent
  but is not the root, hangs under the root run (`Placement.attached_to_root`);
- a cycle is refused: no placement of it is the trace the app recorded."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from tracebus.schemas import TraceDocument
from tracebus.sinks.langsmith.ids import run_uuid, trace_uuid

DOTTED_ORDER_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TreeError(ValueError):
    """The observations of a document do not form one tree LangSmith would accept."""


class RootKind(StrEnum):
    OBSERVATION = "observation"  # an observation of this document: sent as the root run
    ELSEWHERE = "elsewhere"  # an observation of another part: that part sends it
    SYNTHETIC = "synthetic"  # no observation can be the root: a run made up for it is sent


@dataclass(frozen=True)
class Placement:
    run_id: uuid.UUID
    parent_run_id: uuid.UUID | None
    dotted_order: str
    start_time: datetime  # clamped to the parent's start, as the dotted order requires
    # Under the root run instead of under a parent of its own (an orphan, or a second
    # observation without a parent): LangSmith would otherwise show it nowhere.
    attached_to_root: bool = False
    missing_parent: str | None = None  # the parent it names, found nowhere in the document


@dataclass(frozen=True)
class RunTree:
    root: Placement  # the root run, wherever it is sent from
    root_kind: RootKind
    placements: dict[str, Placement]  # every observation and ancestor, by observation id


@dataclass(frozen=True)
class _Node:
    parent_id: str | None
    start_time_unix_nano: int


def utc_datetime(unix_nano: int) -> datetime:
    """Nanoseconds since the epoch as an aware UTC datetime, truncated to microseconds."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


def dotted_order_segment(start_time: datetime, run_id: uuid.UUID) -> str:
    return start_time.strftime(DOTTED_ORDER_TIME_FORMAT) + str(run_id)


def place_runs(document: TraceDocument) -> RunTree:
    """The root run of `document` and the placement of each of its observations and ancestors.

    Raises TreeError naming the problem: no observations, an id given twice, a declared root
    that has a parent, or a cycle."""
    nodes = _nodes(document)
    root_id, root_kind = _root(document, nodes)
    root_node = nodes.get(root_id) if root_id is not None else None
    root_start = utc_datetime(
        root_node.start_time_unix_nano if root_node else trace_start_unix_nano(document)
    )
    root_run_id = trace_uuid(document.trace_id)
    root = Placement(root_run_id, None, dotted_order_segment(root_start, root_run_id), root_start)
    placements: dict[str, Placement] = {}
    if root_id is not None and root_node is not None:
        # Its parent, if any, is missing: _root refuses a declared root with a known parent.
        placements[root_id] = Placement(
            root.run_id,
            None,
            root.dotted_order,
            root.start_time,
            missing_parent=root_node.parent_id,
        )
    for observation_id in nodes:
        _place(document.trace_id, observation_id, root, nodes, placements)
    return RunTree(root, root_kind, placements)


def trace_start_unix_nano(document: TraceDocument) -> int:
    """When the trace started: the start of a root run whose observation is not at hand.

    The summary's start is shared by all parts of a publication, so each part computes the same
    synthetic root. For a root sent by another part it is exact when that root starts the trace,
    as roots do unless clocks disagree. The nodes only count when the summary is later."""
    entries = (*document.ancestors, *document.observations)
    return min([document.summary.start_time_unix_nano, *(e.start_time_unix_nano for e in entries)])


def trace_end_unix_nano(document: TraceDocument) -> int:
    ends = (observation.end_time_unix_nano for observation in document.observations)
    return max([document.summary.end_time_unix_nano, *ends])


def _nodes(document: TraceDocument) -> dict[str, _Node]:
    nodes: dict[str, _Node] = {}
    entries = [*document.ancestors, *document.observations]
    for entry in entries:
        if entry.observation_id in nodes:
            raise TreeError(f"observation {entry.observation_id} appears more than once")
        nodes[entry.observation_id] = _Node(entry.parent_observation_id, entry.start_time_unix_nano)
    if not document.observations:
        raise TreeError("the document has no observations")
    return nodes


def _root(document: TraceDocument, nodes: dict[str, _Node]) -> tuple[str | None, RootKind]:
    """The observation id of the root run (None for a synthetic one) and where it is sent."""
    in_document = {observation.observation_id for observation in document.observations}

    def kind(root_id: str) -> RootKind:
        return RootKind.OBSERVATION if root_id in in_document else RootKind.ELSEWHERE

    declared = document.root_observation_id
    if declared is not None:
        if declared in nodes:
            parent = nodes[declared].parent_id
            if parent in nodes:
                raise TreeError(f"root_observation_id is {declared} but it has parent {parent}")
            return declared, kind(declared)
        if not (document.part == 1 and document.parts == 1):
            # In another part, which sends it. Had an observation here descended from it, it
            # would be among the ancestors: what tops this part hangs under it.
            return declared, RootKind.ELSEWHERE
        # A whole trace without the root it declares: no other part will send that root.
    parentless = [node_id for node_id, node in nodes.items() if node.parent_id is None]
    if len(parentless) == 1:
        return parentless[0], kind(parentless[0])
    return None, RootKind.SYNTHETIC


def _place(
    trace_id: str,
    observation_id: str,
    root: Placement,
    nodes: dict[str, _Node],
    placements: dict[str, Placement],
) -> None:
    """Place `observation_id` and its unplaced ancestors, from the top down."""
    chain: list[str] = []
    current: str | None = observation_id
    while current is not None and current not in placements:
        if current in chain:
            loop = [*chain[chain.index(current) :], current]
            raise TreeError(f"cycle: {' -> '.join(loop)}")
        chain.append(current)
        parent_id = nodes[current].parent_id
        current = parent_id if parent_id in nodes else None  # None: under the root run
    for member in reversed(chain):
        node = nodes[member]
        parent_id = node.parent_id
        if parent_id is not None and parent_id in nodes:
            parent, attached_to_root = placements[parent_id], False
        else:
            parent, attached_to_root = root, True
        start = max(utc_datetime(node.start_time_unix_nano), parent.start_time)
        run_id = run_uuid(trace_id, member, node.start_time_unix_nano)
        placements[member] = Placement(
            run_id,
            parent.run_id,
            f"{parent.dotted_order}.{dotted_order_segment(start, run_id)}",
            start,
            attached_to_root=attached_to_root,
            missing_parent=parent_id if attached_to_root else None,
        )
