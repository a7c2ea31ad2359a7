"""Encoding and decoding of event batches, with validation that reports every problem."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, TypeAdapter, ValidationError

from tracebus.schemas.models import (
    MAX_PROJECT_CHARS,
    PROJECT_HEADER,
    SCHEMA_VERSION,
    AnyEvent,
    Event,
    EventBatch,
)
from tracebus.schemas.traces import TraceDocument

DEFAULT_MAX_RECORD_BYTES = 1_000_000
_EVENT_TAGS = frozenset({"trace", "observation", "observation_update", "score"})
_event_adapter: TypeAdapter[AnyEvent] = TypeAdapter(Event)


class Problem(NamedTuple):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<record>'}: {self.message}"


class SchemaError(ValueError):
    """Input that does not satisfy the wire contract; `problems` lists every violation."""

    _SHOWN = 10  # the message travels in dead letters' headers: the first problems tell enough

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        message = "; ".join(str(p) for p in self.problems[: self._SHOWN])
        if len(self.problems) > self._SHOWN:
            message += f" (and {len(self.problems) - self._SHOWN} more)"
        super().__init__(message)


def record_project(header: bytes | None) -> str | None:
    """An events record's project from the value of its `PROJECT_HEADER` (None: it has none);
    SchemaError when that value is not a project name."""
    if header is None:
        return None
    try:
        project = header.decode()
    except UnicodeDecodeError:
        project = None
    if project is None or not 0 < len(project) <= MAX_PROJECT_CHARS:
        message = f"must be UTF-8 text of 1 to {MAX_PROJECT_CHARS} characters"
        raise SchemaError([Problem(f"headers.{PROJECT_HEADER}", message)])
    return project


def json_default(value: Any) -> Any:
    """orjson fallback for values apps commonly pass as input/output."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return repr(value)


def encode_batch(trace_id: str, events: Iterable[bytes]) -> bytes:
    """Wrap already-serialised events of one trace into a record value without re-encoding."""
    head = b'{"schema_version":%d,"trace_id":"%s","events":[' % (SCHEMA_VERSION, trace_id.encode())
    return head + b",".join(events) + b"]}"


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    previous: int | str | None = None
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not (isinstance(previous, int) and item in _EVENT_TAGS):
            parts.append(f".{item}" if parts else str(item))
        previous = item
    return "".join(parts)


def _problems(error: ValidationError) -> list[Problem]:
    problems = []
    for detail in error.errors(include_url=False):
        path = _path(detail["loc"])
        message = detail["msg"]
        if path.endswith("schema_version") and detail["type"] == "literal_error":
            message = (
                f"unsupported schema_version {detail['input']!r}; "
                f"this build reads version {SCHEMA_VERSION}"
            )
        problems.append(Problem(path, message.removeprefix("Value error, ")))
    return problems


def _invalid(error: ValidationError) -> SchemaError:
    if any(d["type"] == "json_invalid" for d in error.errors()):
        return SchemaError([Problem("", f"malformed JSON: {error.errors()[0]['msg']}")])
    return SchemaError(_problems(error))


def decode_batch(data: bytes, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> EventBatch:
    """Parse and validate one record value; raises SchemaError listing every problem."""
    if len(data) > max_record_bytes:
        raise SchemaError([Problem("", f"record is {len(data)} bytes; limit {max_record_bytes}")])
    try:
        return EventBatch.model_validate_json(data)
    except ValidationError as error:
        raise _invalid(error) from None


def decode_document(data: bytes) -> TraceDocument:
    """Parse and validate one trace document; raises SchemaError listing every problem."""
    try:
        return TraceDocument.model_validate_json(data)
    except ValidationError as error:
        raise _invalid(error) from None


def validate_event(event: dict[str, Any] | bytes) -> AnyEvent:
    """Validate a single event (a dict or its JSON); raises SchemaError listing every problem."""
    try:
        if isinstance(event, bytes | bytearray):
            return _event_adapter.validate_json(event)
        return _event_adapter.validate_python(event)
    except ValidationError as error:
        raise SchemaError(_problems(error)) from None
