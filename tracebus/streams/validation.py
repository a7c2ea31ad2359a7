"""Record validation for the stream: a fast path for well-formed records, pydantic for the rest.

pydantic validates a trace's record (~28 events) in ~200 µs, building models the stream never
uses. `parse_record` checks the parsed JSON directly against the v1 contract instead, and only
when that check is not sure (anything unusual: a missing or extra field, a value of another
type, a pattern that does not match) does it hand the record to `decode_batch`, which either
raises the exact `SchemaError` a dead letter reports, or accepts the record (the fast check is
stricter than pydantic's lax parsing, e.g. of numbers sent as strings) and returns its events
in their validated, normalised form. The fast path therefore accepts a subset of what
`decode_batch` accepts, and every rejection's reason is pydantic's."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from tracebus.schemas import (
    Cost,
    Level,
    ObservationKind,
    ScoreDataType,
    ScoreSource,
    decode_batch,
)
from tracebus.schemas.ids import INVALID_OBSERVATION_ID, INVALID_TRACE_ID
from tracebus.schemas.models import Truncation
from tracebus.schemas.usage import USAGE_FIELDS

# pydantic's JSON parser (jiter) refuses deeper nesting of objects and arrays.
_MAX_DEPTH = 200
_FREE_JSON_FIELDS = ("input", "output", "metadata")
_TRACE_ID = re.compile(r"[0-9a-f]{32}").fullmatch
_OBSERVATION_ID = re.compile(r"[0-9a-f]{16}").fullmatch
_EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}").fullmatch
_ENVIRONMENT = re.compile(r"[a-z0-9_-]{1,40}").fullmatch
_KINDS = frozenset(kind.value for kind in ObservationKind)
_LEVELS = frozenset(level.value for level in Level)
_SCORE_TYPES = frozenset(data_type.value for data_type in ScoreDataType)
_SCORE_SOURCES = frozenset(source.value for source in ScoreSource)
_COST_BUCKETS = frozenset(Cost.model_fields) - {"other"}  # `other` holds buckets of its own
_TRUNCATION_FIELDS = frozenset(Truncation.model_fields)

Check = Callable[[Any], bool]


def _any(value: Any) -> bool:
    return True  # JsonValue: whatever orjson parsed is JSON


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _short_text(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 1000


def _text(value: Any) -> bool:
    return type(value) is str


def _trace_id(value: Any) -> bool:
    return type(value) is str and _TRACE_ID(value) is not None and value != INVALID_TRACE_ID


def _observation_id(value: Any) -> bool:
    return (
        type(value) is str
        and _OBSERVATION_ID(value) is not None
        and value != INVALID_OBSERVATION_ID
    )


def _object(value: Any) -> bool:
    return type(value) is dict


def _tags(value: Any) -> bool:
    return type(value) is list and all(_short_text(tag) for tag in value)


def _environment(value: Any) -> bool:
    return type(value) is str and _ENVIRONMENT(value) is not None


_PARAMETER_TYPES = frozenset({str, int, float, bool, type(None)})


def _model_parameters(value: Any) -> bool:
    return type(value) is dict and _PARAMETER_TYPES.issuperset(map(type, value.values()))


def _buckets(names: frozenset[str], types: frozenset[type]) -> Check:
    """Usage or cost: amounts of these types, not negative (loops rather than calls per amount:
    every generation has them)."""

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return False
        for name, amount in value.items():
            if amount is None:
                if name != "other" and name not in names:
                    return False
            elif name in names:
                if type(amount) not in types or not amount >= 0:
                    return False
            elif name != "other" or type(amount) is not dict:
                return False
            else:
                for value_of_other in amount.values():
                    if type(value_of_other) not in types or not value_of_other >= 0:
                        return False
        return True

    return check


def _truncated(value: Any) -> bool:
    return type(value) is list and all(
        type(t) is dict
        and t.keys() == _TRUNCATION_FIELDS
        and _text(t["field"])
        and _count(t["original_bytes"])
        and _count(t["kept_bytes"])
        for t in value
    )


_usage = _buckets(USAGE_FIELDS, frozenset({int}))
_cost = _buckets(_COST_BUCKETS, frozenset({int, float}))


def _one_of(allowed: frozenset[str]) -> Check:
    return lambda value: type(value) is str and value in allowed


_COMMON_REQUIRED: dict[str, Check] = {
    "schema_version": lambda value: type(value) is int and value == 1,
    "event_id": lambda value: type(value) is str and _EVENT_ID(value) is not None,
    "trace_id": _any,  # must equal the record's trace id, checked once (see `_well_formed`)
    "timestamp_unix_nano": _count,
    "type": _text,
}
_OBSERVATION_OPTIONAL: dict[str, Check] = {
    "truncated": _truncated,
    "parent_observation_id": _observation_id,
    "end_time_unix_nano": _count,
    "status_message": _text,
    "input": _any,
    "output": _any,
    "metadata": _object,
    "model": _short_text,
    "provider": _short_text,
    "model_parameters": _model_parameters,
    "usage": _usage,
    "cost": _cost,
    "completion_start_time_unix_nano": _count,
}
_OBSERVATION_BODY: dict[str, Check] = {
    "kind": _one_of(_KINDS),
    "name": _short_text,
    "start_time_unix_nano": _count,
}
# Per event type: the fields that must be present, those that must not be null (the required
# ones and those with a default), and every field's check.
_SCHEMAS: dict[str, tuple[frozenset[str], frozenset[str], dict[str, Check]]] = {
    name: (frozenset(required), frozenset(required).union(defaulted), {**required, **optional})
    for name, (required, optional, defaulted) in {
        "observation": (
            {**_COMMON_REQUIRED, "observation_id": _observation_id, **_OBSERVATION_BODY},
            {**_OBSERVATION_OPTIONAL, "level": _one_of(_LEVELS)},
            {"level"},
        ),
        "observation_update": (
            {**_COMMON_REQUIRED, "observation_id": _observation_id},
            {**_OBSERVATION_OPTIONAL, **_OBSERVATION_BODY, "level": _one_of(_LEVELS)},
            set(),
        ),
        "trace": (
            _COMMON_REQUIRED,
            {
                "truncated": _truncated,
                "name": _short_text,
                "user_id": _short_text,
                "session_id": _short_text,
                "tags": _tags,
                "metadata": _object,
                "release": _short_text,
                "environment": _environment,
                "input": _any,
                "output": _any,
            },
            set(),
        ),
        "score": (
            {
                **_COMMON_REQUIRED,
                "score_id": lambda value: type(value) is str and _EVENT_ID(value) is not None,
                "name": _short_text,
                "value": lambda value: type(value) in (bool, int, float, str),
                "data_type": _one_of(_SCORE_TYPES),
            },
            {
                "truncated": _truncated,
                "observation_id": _observation_id,
                "comment": _text,
                "source": _one_of(_SCORE_SOURCES),
                "metadata": _object,
            },
            {"source"},
        ),
    }.items()
}
_SCORE_VALUE_TYPES = {
    "NUMERIC": (int, float),
    "CATEGORICAL": (str,),
    "BOOLEAN": (bool,),
}
# The fields `_observation_well_formed` knows.
_OBSERVATION_KEYS = frozenset(_SCHEMAS["observation"][2])


def _well_formed(event: Any, trace_id: str) -> bool:
    if type(event) is not dict:
        return False
    kind = event.get("type")
    schema = _SCHEMAS.get(kind) if type(kind) is str else None
    if schema is None:
        return False
    required, not_null, checks = schema
    keys = event.keys()
    if not required <= keys <= checks.keys():
        return False
    for name, value in event.items():
        if value is None:
            if name in not_null:
                return False
        else:
            check = checks[name]
            if check is not _any and not check(value):
                return False
    if event["trace_id"] != trace_id:
        return False
    if kind == "score":
        return type(event["value"]) in _SCORE_VALUE_TYPES[event["data_type"]]
    parent = event.get("parent_observation_id")
    return parent is None or parent != event["observation_id"]


def _events_well_formed(events: list[Any], trace_id: str) -> bool:
    """Every event `_well_formed`; observations with only known fields (most events) take the
    written-out check, dispatched here rather than per call."""
    for event in events:
        if (
            type(event) is dict
            and event.get("type") == "observation"
            and event.keys() <= _OBSERVATION_KEYS
        ):
            if not _observation_well_formed(event, trace_id):
                return False
        elif not _well_formed(event, trace_id):
            return False
    return True


def _observation_well_formed(event: dict[str, Any], trace_id: str) -> bool:
    """`_well_formed` of an observation event whose fields are all known, written out field by
    field: the table-driven loop costs ~9 µs an event, most events are observations, and each
    test here is that of the field's check in `_SCHEMAS` (a None required field fails it)."""
    try:
        value = event["schema_version"]
        if type(value) is not int or value != 1:
            return False
        value = event["event_id"]
        if type(value) is not str or _EVENT_ID(value) is None:
            return False
        if event["trace_id"] != trace_id:
            return False
        value = event["timestamp_unix_nano"]
        if type(value) is not int or value < 0:
            return False
        observation_id = event["observation_id"]
        if (
            type(observation_id) is not str
            or _OBSERVATION_ID(observation_id) is None
            or observation_id == INVALID_OBSERVATION_ID
        ):
            return False
        value = event["kind"]
        if type(value) is not str or value not in _KINDS:
            return False
        value = event["name"]
        if type(value) is not str or not 0 < len(value) <= 1000:
            return False
        value = event["start_time_unix_nano"]
        if type(value) is not int or value < 0:
            return False
    except KeyError:
        return False  # a required field is missing
    if "level" in event:
        value = event["level"]
        if type(value) is not str or value not in _LEVELS:
            return False
    parent = event.get("parent_observation_id")
    if parent is not None and (parent == observation_id or not _observation_id(parent)):
        return False
    value = event.get("end_time_unix_nano")
    if value is not None and (type(value) is not int or value < 0):
        return False
    value = event.get("completion_start_time_unix_nano")
    if value is not None and (type(value) is not int or value < 0):
        return False
    value = event.get("model")
    if value is not None and (type(value) is not str or not 0 < len(value) <= 1000):
        return False
    value = event.get("provider")
    if value is not None and (type(value) is not str or not 0 < len(value) <= 1000):
        return False
    value = event.get("status_message")
    if value is not None and type(value) is not str:
        return False
    value = event.get("metadata")
    if value is not None and type(value) is not dict:
        return False
    value = event.get("model_parameters")
    if value is not None and not _model_parameters(value):
        return False
    value = event.get("usage")
    if value is not None and not _usage(value):
        return False
    value = event.get("cost")
    if value is not None and not _cost(value):
        return False
    value = event.get("truncated")
    return value is None or _truncated(value)


def _parsed_by_pydantic(value: bytes, events: list[dict[str, Any]]) -> bool:
    """Whether pydantic's parser reads the record (`value`, of these well-formed events): it
    refuses nesting deeper than `_MAX_DEPTH`, where orjson reads up to 1024 levels. A record
    with so few brackets cannot nest that deep (most records); in the others, only the free
    JSON fields can (the record, its events list and an event take 3 levels, the other fields
    at most 2 more), so only they are walked."""
    brackets = value.count(b"{")
    if brackets <= _MAX_DEPTH:  # else counting the others would not change the answer
        brackets += value.count(b"[")
    if brackets <= _MAX_DEPTH:
        return True
    free = [
        field
        for event in events
        for name in _FREE_JSON_FIELDS
        if type(field := event.get(name)) is dict or type(field) is list
    ]
    # `free` adds a level of its own: with the record's 3, 2 more than the limit allows.
    return _nests_within(free, _MAX_DEPTH - 2)


def _nests_within(container: Any, depth: int) -> bool:
    """Whether `container` (a dict or list) and what it holds are at most `depth` deep."""
    level = [container]
    for _ in range(depth):
        level = [
            value
            for outer in level
            for value in (outer.values() if type(outer) is dict else outer)
            if type(value) is dict or type(value) is list
        ]
        if not level:
            return True
    return False


def parse_record(value: bytes, max_record_bytes: int) -> tuple[str, list[dict[str, Any]], bool]:
    """The trace id and events of a record value, and whether they are the record's own JSON
    (False: pydantic's normalised form). Raises `SchemaError` with pydantic's reasons."""
    if len(value) <= max_record_bytes:
        try:
            record = orjson.loads(value)
        except ValueError:
            record = None
        if (
            type(record) is dict
            and len(record) == 3
            and record.get("schema_version") == 1
            and type(record["schema_version"]) is int
            and _trace_id(record.get("trace_id"))
            and type(record.get("events")) is list
            and record["events"]
            and _events_well_formed(record["events"], record["trace_id"])
            and _parsed_by_pydantic(value, record["events"])
        ):
            return record["trace_id"], record["events"], True
    batch = decode_batch(value, max_record_bytes)  # raises the exact SchemaError, or accepts
    events = [event.model_dump(mode="json", exclude_none=True) for event in batch.events]
    return batch.trace_id, events, False
