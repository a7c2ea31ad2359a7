"""Per-trace state: applying events, deciding completion, and building trace documents.

Pure logic with no Kafka in it: the Faust agent keeps one `TraceState` per trace id in a
changelog-backed table (as JSON) and calls these functions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from tracebus.schemas import (
    Completion,
    CostSource,
    EventBatch,
    ObservationEvent,
    ObservationFlag,
    ObservationUpdateEvent,
    ScoreEvent,
    TraceDocument,
    TraceEvent,
    Usage,
)
from tracebus.schemas.traces import Observation, ObservationRef, TraceAttributes, TraceSummary

OPEN, PUBLISHING, PUBLISHED = "open", "publishing", "published"
_NS_PER_MS = 1_000_000
_USAGE_BUCKETS = tuple(name for name in Usage.model_fields if name != "other")
_OBSERVATION_FIELDS = frozenset(Observation.model_fields)
_TRACE_FIELDS = frozenset(TraceAttributes.model_fields)


class PricedCost(Protocol):
    cost: Any
    source: CostSource


class Pricing(Protocol):
    def cost(
        self, provider: str | None, model: str | None, usage: Usage, at_unix_nano: int
    ) -> PricedCost | None: ...


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    late: int = 0


@dataclass
class TraceState:
    """Everything the stream knows of one trace; stored in the table as JSON."""

    trace_id: str
    partition: int
    status: str = OPEN
    revision: int = 0
    completed_by: str | None = None
    first_event_ns: int = 0
    last_event_ns: int = 0
    status_since_ns: int = 0
    parts_published: int = 0
    seen_event_ids: list[str] = field(default_factory=list)
    trace: dict[str, Any] = field(default_factory=dict)
    observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    published_ids: list[str] = field(default_factory=list)
    moved_out: dict[str, list[int | str | None]] = field(default_factory=dict)
    size: int = 0

    def dumps(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def loads(cls, data: bytes) -> TraceState:
        return cls(**orjson.loads(data))


def _newer_first(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Upsert: fields of the later event win; an older event only fills what is missing."""
    later, earlier = (
        (new, old) if new["timestamp_unix_nano"] >= old["timestamp_unix_nano"] else (old, new)
    )
    merged = {**earlier, **later}
    if earlier.get("metadata") and later.get("metadata"):
        merged["metadata"] = {**earlier["metadata"], **later["metadata"]}
    return merged


def apply_batch(
    state: TraceState,
    batch: EventBatch,
    raw_events: list[dict[str, Any]],
    raw_size: int,
    now_ns: int,
) -> ApplyResult:
    """Apply a record's events (validated as `batch`; `raw_events` are the same events as
    parsed JSON, cheaper to keep than dumping the models back); an event id seen before is
    skipped."""
    result = ApplyResult()
    seen = set(state.seen_event_ids)
    reopened = state.status == PUBLISHED
    for event, raw in zip(batch.events, raw_events, strict=True):
        if event.event_id in seen:
            result.duplicates += 1
            continue
        seen.add(event.event_id)
        state.seen_event_ids.append(event.event_id)
        data = {k: v for k, v in raw.items() if v is not None}
        if isinstance(event, ObservationEvent | ObservationUpdateEvent):
            previous = state.observations.get(event.observation_id)
            state.observations[event.observation_id] = (
                data if previous is None else _newer_first(previous, data)
            )
        elif isinstance(event, ScoreEvent):
            previous = state.scores.get(event.score_id)
            state.scores[event.score_id] = (
                data if previous is None else _newer_first(previous, data)
            )
        elif isinstance(event, TraceEvent):
            _merge_trace(state.trace, data)
        result.applied += 1
    if result.applied:
        if not state.first_event_ns:
            state.first_event_ns = now_ns
        state.last_event_ns = now_ns
        state.size += raw_size
        if reopened:
            result.late = result.applied
            state.status = OPEN
            state.status_since_ns = now_ns
    return result


def _merge_trace(known: dict[str, Any], event: dict[str, Any]) -> None:
    if known and event["timestamp_unix_nano"] < known.get("timestamp_unix_nano", 0):
        event = {k: v for k, v in event.items() if k not in known or k in ("tags", "metadata")}
    for key, value in event.items():
        if key == "tags":
            known["tags"] = list(dict.fromkeys([*known.get("tags", ()), *value]))
        elif key == "metadata":
            known["metadata"] = {**known.get("metadata", {}), **value}
        else:
            known[key] = value


def looks_complete(state: TraceState) -> bool:
    """A root observation has ended and nothing that started is still open."""
    observations = state.observations.values()
    has_ended_root = any(
        "parent_observation_id" not in o and "end_time_unix_nano" in o for o in observations
    )
    return has_ended_root and all("end_time_unix_nano" in o for o in observations)


def deadline(state: TraceState, grace_ns: int, idle_ns: int, late_ns: int) -> tuple[int, str]:
    """When the trace next needs attention, and why: publish it, or forget it."""
    if state.status == PUBLISHED:
        return state.status_since_ns + late_ns, "forget"
    if looks_complete(state):
        return state.last_event_ns + grace_ns, Completion.ROOT_ENDED
    return state.last_event_ns + idle_ns, Completion.IDLE_TIMEOUT


def too_big(state: TraceState, max_observations: int, max_bytes: int) -> bool:
    return len(state.observations) > max_observations or state.size > max_bytes


@dataclass
class Enrichment:
    """Counts the documents' builder saw, for metrics."""

    unpriced_generations: int = 0


def build_documents(
    state: TraceState,
    completed_by: str,
    pricing: Pricing,
    now_ns: int,
    max_observations: int,
    final: bool = True,
    enrichment: Enrichment | None = None,
    revision: int | None = None,
) -> list[TraceDocument]:
    """The trace as documents of at most `max_observations` each (parents before children).

    With `final=False` (a trace split for size while still running) the parts are numbered on
    from those already published and the total is left open."""
    enrichment = enrichment or Enrichment()
    known = {observation_id: _filled_in(o) for observation_id, o in state.observations.items()}
    trace_end = _trace_end(known.values())
    # Where every observation sits in the tree, for parts whose ancestors are elsewhere.
    placement = {
        observation_id: (o.get("parent_observation_id"), o["start_time_unix_nano"])
        for observation_id, o in known.items()
    }
    placement.update({k: (v[0], v[1]) for k, v in state.moved_out.items()})  # type: ignore[misc]
    previously_published = set(state.published_ids)
    # A size split while running publishes what has ended; open observations wait.
    candidates = [o for o in known.values() if final or "end_time_unix_nano" in o]
    if not candidates and not final:
        return []
    revision = state.revision if revision is None else revision
    observations = [
        _enrich(raw, placement, previously_published, trace_end, pricing, enrichment, revision)
        for raw in _parents_first(candidates)
    ]
    summary = _summarize(observations)
    root = next((o.observation_id for o in observations if o.parent_observation_id is None), None)
    chunks = [
        observations[i : i + max_observations]
        for i in range(0, max(len(observations), 1), max_observations)
    ]
    first_part = state.parts_published + 1
    total = state.parts_published + len(chunks) if final else None
    documents = []
    for offset, chunk in enumerate(chunks):
        documents.append(
            TraceDocument(
                schema_version=1,
                trace_id=state.trace_id,
                revision=revision,
                part=first_part + offset,
                parts=total,
                completed_by=completed_by,
                published_at_unix_nano=now_ns,
                trace=_attributes(state.trace),
                root_observation_id=root,
                observations=chunk,
                ancestors=_ancestors(chunk, placement),
                scores=[ScoreEvent.model_validate(s) for s in state.scores.values()]
                if offset == 0
                else [],
                summary=summary,
            )
        )
    return documents


def _trace_end(observations: Iterable[dict[str, Any]]) -> int:
    ends = [max(o.get("end_time_unix_nano", 0), o["timestamp_unix_nano"]) for o in observations]
    return max(ends, default=0)


def _filled_in(observation: dict[str, Any]) -> dict[str, Any]:
    """An observation known only from updates, completed with stand-in values and flagged."""
    if "kind" in observation and "name" in observation and "start_time_unix_nano" in observation:
        return observation
    start = observation.get("end_time_unix_nano", observation["timestamp_unix_nano"])
    return {
        "kind": "span",
        "name": "unnamed",
        "start_time_unix_nano": start,
        **observation,
        "incomplete": True,
    }


def _parents_first(observations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order so that every parent precedes its children; cycles are broken, not looped."""
    by_id = {o["observation_id"]: o for o in observations}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for o in by_id.values():
        parent = o.get("parent_observation_id")
        children.setdefault(parent if parent in by_id else None, []).append(o)
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()
    stack = sorted(children.get(None, []), key=lambda o: -o["start_time_unix_nano"])
    while stack:
        current = stack.pop()
        if current["observation_id"] in placed:
            continue
        placed.add(current["observation_id"])
        ordered.append(current)
        kids = children.get(current["observation_id"], [])
        stack.extend(sorted(kids, key=lambda o: -o["start_time_unix_nano"]))
    # Whatever is left sits on a parent cycle: place it as if its parent were missing.
    ordered.extend(o for o in by_id.values() if o["observation_id"] not in placed)
    return ordered


def _enrich(
    raw: dict[str, Any],
    known: dict[str, tuple[str | None, int]],
    previously_published: set[str],
    trace_end: int,
    pricing: Pricing,
    enrichment: Enrichment,
    revision: int,
) -> Observation:
    flags: list[ObservationFlag] = [ObservationFlag.INCOMPLETE] if "incomplete" in raw else []
    start = raw["start_time_unix_nano"]
    end = raw.get("end_time_unix_nano")
    if end is None:
        flags.append(ObservationFlag.STILL_OPEN)
        end = max(trace_end, start)
    if end < start:
        flags.append(ObservationFlag.END_BEFORE_START)
        end = start
    parent = raw.get("parent_observation_id")
    if parent is not None and parent not in known:
        flags.append(ObservationFlag.ORPHAN)
    if revision > 1 and raw["observation_id"] not in previously_published:
        flags.append(ObservationFlag.LATE)
    fields = {k: v for k, v in raw.items() if k in _OBSERVATION_FIELDS}
    observation = Observation(
        **{**fields, "end_time_unix_nano": end},
        duration_ms=(end - start) / _NS_PER_MS,
        flags=flags,
    )
    ttft = raw.get("completion_start_time_unix_nano")
    if ttft is not None:
        observation.time_to_first_token_ms = max(ttft - start, 0) / _NS_PER_MS
    if observation.cost is not None:
        observation.cost_source = CostSource.REPORTED
    elif observation.usage is not None and observation.kind in ("generation", "embedding"):
        priced = pricing.cost(observation.provider, observation.model, observation.usage, start)
        if priced is None:
            observation.flags.append(ObservationFlag.UNKNOWN_MODEL)
            enrichment.unpriced_generations += 1
        else:
            observation.cost, observation.cost_source = priced.cost, priced.source
    return observation


def _summarize(observations: list[Observation]) -> TraceSummary:
    usage: dict[str, int] = {}
    cost: dict[str, float] = {}
    by_kind: dict[str, int] = {}
    errors = warnings = unpriced = 0
    for o in observations:
        by_kind[o.kind] = by_kind.get(o.kind, 0) + 1
        errors += o.level == "ERROR"
        warnings += o.level == "WARNING"
        unpriced += ObservationFlag.UNKNOWN_MODEL in o.flags
        if o.usage is not None:
            for bucket in _USAGE_BUCKETS:
                value = getattr(o.usage, bucket)
                if value is not None:
                    usage[bucket] = usage.get(bucket, 0) + value
        if o.cost is not None:
            for bucket, value in o.cost.model_dump(exclude_none=True, exclude={"other"}).items():
                cost[bucket] = cost.get(bucket, 0.0) + value
    start = min((o.start_time_unix_nano for o in observations), default=0)
    end = max((o.end_time_unix_nano for o in observations), default=0)
    return TraceSummary(
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        duration_ms=(end - start) / _NS_PER_MS,
        observation_count=len(observations),
        observations_by_kind=by_kind,
        error_count=errors,
        warning_count=warnings,
        usage=Usage(**usage),
        cost=cost,
        unpriced_generations=unpriced,
    )


def _attributes(trace: dict[str, Any]) -> TraceAttributes:
    return TraceAttributes(**{k: v for k, v in trace.items() if k in _TRACE_FIELDS})


def _ancestors(
    chunk: list[Observation], placement: dict[str, tuple[str | None, int]]
) -> list[ObservationRef]:
    """Ancestors of the chunk's observations that are not in the chunk itself."""
    inside = {o.observation_id for o in chunk}
    refs: dict[str, ObservationRef] = {}
    for o in chunk:
        parent = o.parent_observation_id
        while parent is not None and parent not in inside and parent not in refs:
            if parent not in placement:
                break
            grandparent, start = placement[parent]
            refs[parent] = ObservationRef(
                observation_id=parent,
                parent_observation_id=grandparent,
                start_time_unix_nano=start,
            )
            parent = grandparent
    return list(refs.values())


def mark_published(state: TraceState, now_ns: int, final: bool) -> None:
    """After the documents were acknowledged: forget or shrink the state accordingly."""
    if final:
        state.status = PUBLISHED
        state.parts_published = 0
    else:
        # A size split while the trace is still running: what the parts carried leaves the
        # state, keeping only where it sat in the tree for the children still to come.
        published = set(state.published_ids)
        for observation_id in published.intersection(state.observations):
            o = state.observations.pop(observation_id)
            state.moved_out[observation_id] = [
                o.get("parent_observation_id"),
                o["start_time_unix_nano"],
            ]
        state.size = len(orjson.dumps(state.observations))
        state.status = OPEN
    state.status_since_ns = now_ns


def forget_content(state: TraceState) -> None:
    """Drop what a published trace holds, keeping its identity and revision."""
    state.observations = {}
    state.scores = {}
    state.seen_event_ids = []
    state.published_ids = []
    state.moved_out = {}
    state.size = 0
