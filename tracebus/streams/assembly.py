"""Per-trace state: applying events, deciding completion, and building trace documents.

Pure logic with no Kafka in it. A worker keeps one `TraceState` per trace in memory: the
records that carried its events, as the raw bytes they arrived in, and an index of what
deciding completion needs (which events were seen; per observation, whether it has a parent
and has ended). The merged content is materialised from the records only to publish: parsed
objects take about 3× the memory of their JSON, and most records are read once.

The same records are the trace's durable copy in the changelog-backed table (see `app.py`):
`rebuild` turns the table's entries of a trace back into the state the worker had."""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from tracebus.schemas import (
    Completion,
    Cost,
    CostSource,
    EventTooLarge,
    Limits,
    ObservationFlag,
    ScoreEvent,
    TraceDocument,
    Usage,
    serialize_event,
)
from tracebus.schemas.traces import Observation, TraceAttributes
from tracebus.streams.pricing import TokenCounts

OPEN, PUBLISHING, PUBLISHED = "open", "publishing", "published"
_NS_PER_MS = 1_000_000
_HAS_PARENT, _ENDED = 1, 2
_OBSERVATION_TYPES = frozenset({"observation", "observation_update"})
_USAGE_FIELDS = tuple(Usage.model_fields)
_USAGE_BUCKETS = tuple(name for name in _USAGE_FIELDS if name != "other")
# Field orders of the document's models, so a document's JSON is the one pydantic would write.
_DOCUMENT_FIELDS = tuple(TraceDocument.model_fields)
_OBSERVATION_FIELDS = tuple(Observation.model_fields)
_TRACE_FIELDS = tuple(TraceAttributes.model_fields)
_SCORE_FIELDS = tuple(ScoreEvent.model_fields)
_COST_FIELDS = tuple(Cost.model_fields)
_START = operator.itemgetter("start_time_unix_nano")
_PRICED_KINDS = frozenset({"generation", "embedding"})
# The observation fields between `level` and `usage`, which documents carry as the events said.
_PASSED_ON = _OBSERVATION_FIELDS[
    _OBSERVATION_FIELDS.index("level") + 1 : _OBSERVATION_FIELDS.index("usage")
]
# What a status mark holds: everything but the content (which the records hold).
_STATUS_FIELDS = (
    "partition",
    "project",
    "status",
    "revision",
    "completed_by",
    "status_since_ns",
    "parts_published",
    "published_ids",
    "moved_out",
)


class PricedCost(Protocol):
    fields: dict[str, Any]  # the `Cost` as pydantic dumps it with `exclude_none`
    source: CostSource


class Pricing(Protocol):
    def cost(
        self, provider: str | None, model: str | None, usage: TokenCounts, at_unix_nano: int
    ) -> PricedCost | None: ...


class _Tokens:
    """A usage dict as the attributes pricing reads: `Usage.model_construct` costs ~15 µs, and
    a dataclass built from keywords ~2 µs; the buckets a usage lacks read the class's None."""

    input_tokens: int | None = None
    input_cache_read_tokens: int | None = None
    input_cache_creation_tokens: int | None = None
    input_audio_tokens: int | None = None
    output_tokens: int | None = None
    output_reasoning_tokens: int | None = None
    output_audio_tokens: int | None = None
    total_tokens: int | None = None
    other: dict[str, int] | None = None

    def __init__(self, usage: dict[str, Any]) -> None:
        self.__dict__.update(usage)


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    late: int = 0


@dataclass
class Content:
    """A trace's events merged: what its documents are built from."""

    trace: dict[str, Any] = field(default_factory=dict)
    observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class TraceState:
    """Everything a worker knows of one trace."""

    trace_id: str
    partition: int
    # The project of its first record stamped with one (None: none was); see `PROJECT_HEADER`.
    project: str | None = None
    status: str = OPEN
    revision: int = 0
    completed_by: str | None = None
    status_since_ns: int = 0
    parts_published: int = 0
    published_ids: list[str] = field(default_factory=list)
    moved_out: dict[str, list[int | str | None]] = field(default_factory=dict)
    first_event_ns: int = 0
    last_event_ns: int = 0
    size: int = 0
    seen: set[str] = field(default_factory=set)
    # The content: a snapshot (JSON of `Content` and `seen`), then the records since, as
    # (table key, record value) in the order they arrived.
    snapshot: bytes | None = None
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Per observation id: _HAS_PARENT | _ENDED, as the merged observation would have them.
    flags: dict[str, int] = field(default_factory=dict)
    unended: int = 0
    ended_roots: int = 0

    def status_mark(self) -> bytes:
        return orjson.dumps({name: getattr(self, name) for name in _STATUS_FIELDS})

    def apply_status_mark(self, data: bytes) -> None:
        for name, value in orjson.loads(data).items():
            setattr(self, name, value)


# -- table keys -------------------------------------------------------------------------------
# A trace's entries share its id as prefix: `<id>` its status mark, `<id>/snapshot` its content
# snapshot, `<id>/<partition>/<offset>/<received ns>[/<project>]` each record since the snapshot
# (the offset zero-padded, so that the keys sort in arrival order).

_ID_LENGTH = 32


def status_key(trace_id: str) -> bytes:
    return trace_id.encode()


def snapshot_key(trace_id: str) -> bytes:
    return b"%s/snapshot" % trace_id.encode()


def record_key(
    trace_id: str, partition: int, offset: int, received_ns: int, project: str | None
) -> bytes:
    key = b"%s/%d/%020d/%d" % (trace_id.encode(), partition, offset, received_ns)
    return key if project is None else b"%s/%s" % (key, project.encode())


def rebuild(
    entries: Iterable[tuple[bytes, bytes]], skip: Container[str] = ()
) -> dict[str, TraceState]:
    """The states of the traces whose table entries these are, but those in `skip`."""
    grouped: dict[str, list[tuple[bytes, bytes]]] = {}
    for key, value in entries:
        grouped.setdefault(key[:_ID_LENGTH].decode(), []).append((key, value))
    states = {}
    for trace_id, items in grouped.items():
        if trace_id in skip:
            continue
        mark = snapshot = None
        records = []
        for key, value in items:
            if len(key) == _ID_LENGTH:
                mark = value
            elif key.endswith(b"/snapshot"):
                snapshot = value
            else:
                records.append((key, value))
        records.sort()
        state = TraceState(trace_id, int(records[0][0].split(b"/", 2)[1]) if records else 0)
        if snapshot is not None:
            _restore_snapshot(state, snapshot)
        for key, value in records:
            _, _, _, received_ns, *project = key.split(b"/", 4)
            events = orjson.loads(value)["events"]
            if apply_events(state, events, len(value), int(received_ns)).applied:
                state.records.append((key, value))
                if project and state.project is None:
                    state.project = project[0].decode()
        if mark is not None:
            state.apply_status_mark(mark)
        states[trace_id] = state
    return states


# -- applying events --------------------------------------------------------------------------


def apply_events(
    state: TraceState, events: list[dict[str, Any]], record_size: int, now_ns: int
) -> ApplyResult:
    """Index a record's (validated) events; an event id seen before is skipped. The caller
    keeps the record in `state.records` when anything was applied."""
    seen = state.seen
    reopened = state.status == PUBLISHED
    applied = duplicates = 0  # counted in locals: attribute updates per event cost more
    for event in events:
        event_id = event["event_id"]
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        if event["type"] in _OBSERVATION_TYPES:
            _index(state, event)
        applied += 1
    result = ApplyResult(applied, duplicates)
    if applied:
        if not state.first_event_ns:
            state.first_event_ns = now_ns
        state.last_event_ns = now_ns
        state.size += record_size
        if reopened:
            result.late = result.applied
            state.status = OPEN
            state.status_since_ns = now_ns
    return result


def _index(state: TraceState, observation: dict[str, Any]) -> None:
    observation_id = observation["observation_id"]
    old = state.flags.get(observation_id)
    new = old or 0
    if observation.get("parent_observation_id") is not None:
        new |= _HAS_PARENT
    if observation.get("end_time_unix_nano") is not None:
        new |= _ENDED
    if old == new:
        return
    if old is not None:
        state.unended -= not old & _ENDED
        state.ended_roots -= old == _ENDED
    state.flags[observation_id] = new
    state.unended += not new & _ENDED
    state.ended_roots += new == _ENDED


def _index_content(state: TraceState, content: Content) -> None:
    state.flags.clear()
    state.unended = state.ended_roots = 0
    for observation in content.observations.values():
        _index(state, observation)


def materialize(state: TraceState) -> Content:
    """The merged content: the snapshot, then every record's events in arrival order (upserts:
    fields of the later event win; an event id is applied once)."""
    content, seen = Content(), set()
    if state.snapshot is not None:
        data = orjson.loads(state.snapshot)
        content = Content(data["trace"], data["observations"], data["scores"])
        seen = set(data["seen"])
    observations, scores = content.observations, content.scores
    for _, value in state.records:
        for event in orjson.loads(value)["events"]:
            event_id = event["event_id"]
            if event_id in seen:
                continue
            seen.add(event_id)
            # A null field is an absent one (an upsert leaves it as it was).
            data = (
                {k: v for k, v in event.items() if v is not None}
                if None in event.values()
                else event
            )
            kind = data["type"]
            if kind in _OBSERVATION_TYPES:
                observation_id = data["observation_id"]
                previous = observations.get(observation_id)
                observations[observation_id] = (
                    data if previous is None else _newer_first(previous, data)
                )
            elif kind == "score":
                previous = scores.get(data["score_id"])
                scores[data["score_id"]] = (
                    data if previous is None else _newer_first(previous, data)
                )
            else:
                _merge_trace(content.trace, data)
    return content


def _restore_snapshot(state: TraceState, snapshot: bytes) -> None:
    data = orjson.loads(snapshot)
    state.snapshot = snapshot
    state.partition = data["partition"]
    state.project = data.get("project")  # snapshots written before projects have none
    state.seen = set(data["seen"])
    state.first_event_ns, state.last_event_ns = data["first_event_ns"], data["last_event_ns"]
    state.size = data["size"]
    _index_content(state, Content(data["trace"], data["observations"], data["scores"]))


def _take_snapshot(state: TraceState, content: Content) -> list[bytes]:
    """Replace the records by a snapshot of `content`; the keys of the records dropped."""
    state.snapshot = orjson.dumps(
        {
            "partition": state.partition,
            "project": state.project,
            "seen": list(state.seen),
            "first_event_ns": state.first_event_ns,
            "last_event_ns": state.last_event_ns,
            "size": state.size,
            "trace": content.trace,
            "observations": content.observations,
            "scores": content.scores,
        }
    )
    dropped = [key for key, _ in state.records]
    state.records = []
    _index_content(state, content)
    return dropped


def _newer_first(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Upsert: fields of the later event win; an older event only fills what is missing."""
    later, earlier = (
        (new, old) if new["timestamp_unix_nano"] >= old["timestamp_unix_nano"] else (old, new)
    )
    merged = {**earlier, **later}
    if earlier.get("metadata") and later.get("metadata"):
        merged["metadata"] = {**earlier["metadata"], **later["metadata"]}
    return merged


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


# -- completion -------------------------------------------------------------------------------


def looks_complete(state: TraceState) -> bool:
    """A root observation has ended and nothing that started is still open."""
    return state.ended_roots > 0 and state.unended == 0


def deadline(state: TraceState, grace_ns: int, idle_ns: int, late_ns: int) -> tuple[int, str]:
    """When the trace next needs attention, and why: publish it, or forget it."""
    if state.status == PUBLISHED:
        return state.status_since_ns + late_ns, "forget"
    if looks_complete(state):
        return state.last_event_ns + grace_ns, Completion.ROOT_ENDED
    return state.last_event_ns + idle_ns, Completion.IDLE_TIMEOUT


def too_big(state: TraceState, max_observations: int, max_bytes: int) -> bool:
    return len(state.flags) > max_observations or state.size > max_bytes


# -- documents --------------------------------------------------------------------------------


@dataclass
class Enrichment:
    """Counts the documents' builder saw, for metrics."""

    unpriced_generations: int = 0


@dataclass(frozen=True, slots=True)
class Document:
    """A `TraceDocument` as a plain dict (the JSON pydantic would write with `exclude_none`),
    and that JSON."""

    body: dict[str, Any]
    data: bytes


def build_documents(
    state: TraceState,
    content: Content,
    completed_by: str,
    pricing: Pricing,
    now_ns: int,
    max_observations: int,
    max_bytes: int,
    final: bool = True,
    enrichment: Enrichment | None = None,
    revision: int | None = None,
) -> list[Document]:
    """The trace as documents of at most `max_observations` each and, as JSON, at most
    `max_bytes` (a broker refuses larger messages), parents before children.

    When the documents do not fit, the trace's attributes (repeated in every part) are cut to a
    quarter of a document, and an observation too large for a document of its own has its free
    fields cut, both with tracebus's truncation marker.

    With `final=False` (a trace split for size while still running) the parts are numbered on
    from those already published and the total is left open."""
    enrichment = enrichment or Enrichment()
    known: dict[str, dict[str, Any]] = {}
    # Where every observation sits in the tree, for parts whose ancestors are elsewhere.
    placement: dict[str, tuple[str | None, int]] = {}
    for observation_id, raw in content.observations.items():
        o = known[observation_id] = _filled_in(raw)
        placement[observation_id] = (o.get("parent_observation_id"), o["start_time_unix_nano"])
    trace_end = _trace_end(known.values())
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
    roots = (o["observation_id"] for o in observations if "parent_observation_id" not in o)
    envelope = {
        "schema_version": 1,
        "trace_id": state.trace_id,
        "project": state.project,
        "revision": revision,
        "completed_by": str(completed_by),
        "published_at_unix_nano": now_ns,
        "trace": _attributes(content.trace),
        "root_observation_id": next(roots, None),
        "summary": _summarize(observations),
    }
    scores = [_score(s) for s in content.scores.values()]
    chunks = [
        observations[i : i + max_observations]
        for i in range(0, max(len(observations), 1), max_observations)
    ]

    part_scores = _PartScores(scores, observations)

    def numbered(chunks: list[list[dict[str, Any]]]) -> list[Document]:
        first_part = state.parts_published + 1
        total = state.parts_published + len(chunks) if final else None
        documents = []
        for offset, chunk in enumerate(chunks):
            body = _document(
                envelope, chunk, placement, part_scores(chunk, offset == 0), first_part + offset
            )
            if total is not None:
                body["parts"] = total
            body = {k: body[k] for k in _DOCUMENT_FIELDS if k in body}
            documents.append(Document(body, orjson.dumps(body)))
        return documents

    documents = numbered(chunks)
    if any(len(d.data) > max_bytes for d in documents):
        attributes = envelope["trace"] = _cut(envelope["trace"], max_bytes // 4)
        attributes.pop("truncated", None)  # the attributes have no such field: the marker says it
        documents = numbered(_fitted(chunks, envelope, placement, part_scores, max_bytes))
    return documents


class _PartScores:
    """Which scores go in which part: a score of an observation goes with it (a sink can then
    attach it to the observation's run), the trace's own and those of observations in no part
    go in the first."""

    def __init__(self, scores: list[dict[str, Any]], observations: list[dict[str, Any]]) -> None:
        self._scores = scores
        self._published = (
            {o["observation_id"] for o in observations}
            if any("observation_id" in s for s in scores)
            else set()
        )

    def __call__(self, chunk: list[dict[str, Any]], first: bool) -> list[dict[str, Any]]:
        if not self._published:
            return self._scores if first else []
        inside = {o["observation_id"] for o in chunk}
        published = self._published
        return [
            s
            for s in self._scores
            if s.get("observation_id") in inside
            or (first and s.get("observation_id") not in published)
        ]


# Envelope fields a document leaves out when they are None (pydantic's `exclude_none`).
_OPTIONAL_ENVELOPE_FIELDS = ("project", "root_observation_id")
# Room left in a measured document for its part numbers, which change as chunks are halved.
_NUMBERS_ROOM = 64


def _document(
    envelope: dict[str, Any],
    chunk: list[dict[str, Any]],
    placement: dict[str, tuple[str | None, int]],
    scores: list[dict[str, Any]],
    part: int,
) -> dict[str, Any]:
    """A document's fields but `parts`, in no particular order; None ones left out."""
    body = {
        **envelope,
        "part": part,
        "observations": chunk,
        "ancestors": _ancestors(chunk, placement),
        "scores": scores,
    }
    for optional in _OPTIONAL_ENVELOPE_FIELDS:
        if body[optional] is None:
            del body[optional]
    return body


def _fitted(
    chunks: list[list[dict[str, Any]]],
    envelope: dict[str, Any],
    placement: dict[str, tuple[str | None, int]],
    part_scores: _PartScores,
    max_bytes: int,
) -> list[list[dict[str, Any]]]:
    """The chunks, halved until each one's document fits in `max_bytes`; an observation that
    alone does not fit is cut down to the room its document leaves it."""
    budget = max_bytes - _NUMBERS_ROOM
    pending, fitted = list(reversed(chunks)), []
    while pending:
        chunk = pending.pop()
        body = _document(envelope, chunk, placement, part_scores(chunk, not fitted), 1)
        size = len(orjson.dumps(body))
        if size <= budget:
            fitted.append(chunk)
        elif len(chunk) > 1:
            half = len(chunk) // 2
            pending += [chunk[half:], chunk[:half]]
        else:
            [observation] = chunk
            room = len(orjson.dumps(observation)) - (size - budget)
            fitted.append([_cut(observation, room)])
    return fitted


def _cut(values: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """`values` (an observation, trace attributes) with their free fields cut so that their
    JSON fits in `max_bytes`, a `truncated` entry per field cut, as the SDK cuts an event's; as
    they were when they fit, or when their other fields alone do not (the broker decides)."""
    if len(orjson.dumps(values)) <= max_bytes:
        return values
    cut = dict(values)
    try:
        serialize_event(cut, Limits(max_field_bytes=max_bytes, max_event_bytes=max_bytes))
    except (EventTooLarge, ValueError):
        return values
    return cut


def _trace_end(observations: Collection[dict[str, Any]]) -> int:
    ends = [o.get("end_time_unix_nano", 0) for o in observations]
    timestamps = [o["timestamp_unix_nano"] for o in observations]
    return max(max(ends, default=0), max(timestamps, default=0))


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
    """Order so that every parent precedes its children, siblings by start; cycles are broken,
    not looped."""
    by_id = {o["observation_id"]: o for o in observations}
    # One stable sort of all of them leaves every list of siblings sorted as if on its own.
    latest_first = sorted(by_id.values(), key=_START, reverse=True)
    children: dict[str | None, list[dict[str, Any]]] = {}
    for o in latest_first:
        parent = o.get("parent_observation_id")
        children.setdefault(parent if parent in by_id else None, []).append(o)
    # Each observation is in one list of children, which goes on the stack once (when its
    # parent comes off it): nothing is placed twice.
    ordered: list[dict[str, Any]] = []
    stack = children.pop(None, [])
    while stack:
        current = stack.pop()
        ordered.append(current)
        kids = children.get(current["observation_id"])
        if kids:
            stack.extend(kids)
    if len(ordered) < len(by_id):
        # Whatever is left sits on a parent cycle: place it as if its parent were missing.
        placed = {o["observation_id"] for o in ordered}
        ordered.extend(o for o in by_id.values() if o["observation_id"] not in placed)
    return ordered


def _dumped(values: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A `Usage` or `Cost` as pydantic dumps it with `exclude_none`."""
    return {k: values[k] for k in fields if k in values and values[k] is not None}


def _enrich(
    raw: dict[str, Any],
    known: dict[str, tuple[str | None, int]],
    previously_published: set[str],
    trace_end: int,
    pricing: Pricing,
    enrichment: Enrichment,
    revision: int,
) -> dict[str, Any]:
    flags: list[str] = [ObservationFlag.INCOMPLETE] if "incomplete" in raw else []
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
    usage = raw.get("usage")
    if usage is not None:
        usage = _dumped(usage, _USAGE_FIELDS)
    cost, cost_source = raw.get("cost"), None
    if cost is not None:
        cost, cost_source = _dumped(cost, _COST_FIELDS), CostSource.REPORTED
    elif usage is not None and raw["kind"] in _PRICED_KINDS:
        priced = pricing.cost(raw.get("provider"), raw.get("model"), _Tokens(usage), start)
        if priced is None:
            flags.append(ObservationFlag.UNKNOWN_MODEL)
            enrichment.unpriced_generations += 1
        else:
            cost, cost_source = priced.fields, priced.source
    # Written out in the model's field order (`_OBSERVATION_FIELDS`; the document's JSON must be
    # the one pydantic would write): what was computed, else what the events said. Events have
    # no field the stream computes, so those need no look in `raw`.
    observation = {"observation_id": raw["observation_id"]}
    if "parent_observation_id" in raw:
        observation["parent_observation_id"] = raw["parent_observation_id"]
    observation["kind"] = raw["kind"]
    observation["name"] = raw["name"]
    observation["start_time_unix_nano"] = start
    observation["end_time_unix_nano"] = end
    observation["duration_ms"] = (end - start) / _NS_PER_MS
    observation["level"] = raw.get("level", "DEFAULT")
    for name in _PASSED_ON:
        if name in raw:
            observation[name] = raw[name]
    if usage is not None or "usage" in raw:
        observation["usage"] = usage
    if cost is not None or "cost" in raw:
        observation["cost"] = cost
    if cost_source is not None:
        observation["cost_source"] = cost_source
    ttft = raw.get("completion_start_time_unix_nano")
    if ttft is not None or "completion_start_time_unix_nano" in raw:
        observation["completion_start_time_unix_nano"] = ttft
    if ttft is not None:
        observation["time_to_first_token_ms"] = max(ttft - start, 0) / _NS_PER_MS
    observation["flags"] = flags
    if "truncated" in raw:
        observation["truncated"] = raw["truncated"]
    return observation


def _summarize(observations: list[dict[str, Any]]) -> dict[str, Any]:
    usage: dict[str, int] = {}
    cost: dict[str, float] = {}
    # Counted by C loops over lists (a Counter keeps the order kinds first appear in).
    by_kind = dict(Counter([o["kind"] for o in observations]))
    levels = [o["level"] for o in observations]
    unpriced = [ObservationFlag.UNKNOWN_MODEL in o["flags"] for o in observations].count(True)
    for o in observations:
        if "usage" in o:
            # Integer sums, so the order buckets come in does not matter (the result is put in
            # field order below); the usage holds only `Usage` fields, none of them null.
            for bucket, value in o["usage"].items():
                if bucket != "other":
                    usage[bucket] = usage.get(bucket, 0) + value
        if "cost" in o:
            for bucket, value in o["cost"].items():
                if bucket != "other":
                    cost[bucket] = cost.get(bucket, 0.0) + value
    start = min([o["start_time_unix_nano"] for o in observations], default=0)
    end = max([o["end_time_unix_nano"] for o in observations], default=0)
    return {
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ms": (end - start) / _NS_PER_MS,
        "observation_count": len(observations),
        "observations_by_kind": by_kind,
        "error_count": levels.count("ERROR"),
        "warning_count": levels.count("WARNING"),
        "usage": {k: usage[k] for k in _USAGE_BUCKETS if k in usage},
        "cost": {k: cost[k] for k in _COST_FIELDS if k in cost},
        "unpriced_generations": unpriced,
    }


def _attributes(trace: dict[str, Any]) -> dict[str, Any]:
    """`TraceAttributes` (tags and metadata default to empty)."""
    defaults: dict[str, Any] = {"tags": [], "metadata": {}}
    attributes = {}
    for name in _TRACE_FIELDS:
        value = trace.get(name, defaults.get(name))
        if value is not None:
            attributes[name] = value
    return attributes


def _score(score: dict[str, Any]) -> dict[str, Any]:
    """A `ScoreEvent` as pydantic dumps it: a numeric value is a float, the source defaults."""
    value = score["value"]
    if type(value) is int:
        score = {**score, "value": float(value)}
    if "source" not in score:
        score = {**score, "source": "API"}
    return {k: score[k] for k in _SCORE_FIELDS if k in score}


def _ancestors(
    chunk: list[dict[str, Any]], placement: dict[str, tuple[str | None, int]]
) -> list[dict[str, Any]]:
    """Ancestors of the chunk's observations that are not in the chunk itself."""
    inside = {o["observation_id"] for o in chunk}
    parents = {o.get("parent_observation_id") for o in chunk}
    parents.discard(None)
    if parents <= inside:
        return []  # the common case, found without walking up from every observation
    refs: dict[str, dict[str, Any]] = {}
    for o in chunk:
        parent = o.get("parent_observation_id")
        while parent is not None and parent not in inside and parent not in refs:
            if parent not in placement:
                break
            grandparent, start = placement[parent]
            ref: dict[str, Any] = {"observation_id": parent}
            if grandparent is not None:
                ref["parent_observation_id"] = grandparent
            ref["start_time_unix_nano"] = start
            refs[parent] = ref
            parent = grandparent
    return list(refs.values())


# -- after publication ------------------------------------------------------------------------


def mark_published(state: TraceState, now_ns: int, final: bool) -> list[bytes]:
    """After the documents were acknowledged: keep the content for late events, or (a size
    split of a running trace) drop what the parts carried. The table keys of records replaced
    by a snapshot are returned."""
    dropped: list[bytes] = []
    if final:
        state.status = PUBLISHED
        state.parts_published = 0
    else:
        # What the parts carried leaves the state, keeping only where it sat in the tree for
        # the children still to come.
        content = materialize(state)
        for observation_id in set(state.published_ids).intersection(content.observations):
            o = content.observations.pop(observation_id)
            state.moved_out[observation_id] = [
                o.get("parent_observation_id"),
                o["start_time_unix_nano"],
            ]
        state.size = len(orjson.dumps(content.observations))
        dropped = _take_snapshot(state, content)
        state.status = OPEN
    state.status_since_ns = now_ns
    return dropped


def forget_content(state: TraceState) -> list[bytes]:
    """Drop what a published trace holds, keeping its identity and revision; the table keys of
    the records dropped are returned."""
    dropped = [key for key, _ in state.records]
    state.records = []
    state.snapshot = None
    state.seen = set()
    state.flags = {}
    state.unended = state.ended_roots = 0
    state.published_ids = []
    state.moved_out = {}
    state.size = 0
    return dropped
