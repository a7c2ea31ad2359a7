"""Handles apps hold while an observation is open: update, end, score, propagate."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tracebus.producers.context import current
from tracebus.schemas.ids import format_traceparent
from tracebus.schemas.models import Level, ObservationKind
from tracebus.schemas.usage import normalize_usage

if TYPE_CHECKING:
    from tracebus.producers.client import Client

UNSET: Any = object()
KINDS = frozenset(kind.value for kind in ObservationKind)
LEVELS = frozenset(level.value for level in Level)
# (attribute, event key) of the optional observation fields, in event order.
OPTIONAL_FIELDS = (
    ("end_ns", "end_time_unix_nano"),
    ("status_message", "status_message"),
    ("input", "input"),
    ("output", "output"),
    ("metadata", "metadata"),
    ("model", "model"),
    ("provider", "provider"),
    ("model_parameters", "model_parameters"),
    ("usage", "usage"),
    ("cost", "cost"),
    ("completion_start_ns", "completion_start_time_unix_nano"),
)
TRACE_FIELDS = (
    "name",
    "user_id",
    "session_id",
    "tags",
    "metadata",
    "release",
    "environment",
    "input",
    "output",
)


def to_unix_nano(value: Any) -> int:
    """Accept datetimes, float seconds or integer nanoseconds."""
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value * 1e9)
    return int(value.timestamp() * 1e9)


class TraceState:
    """What this process knows of one trace: its id, sampling decision and trace attributes."""

    __slots__ = ("attributes", "dirty", "root_ended", "sampled", "trace_id")

    def __init__(self, trace_id: str, sampled: bool) -> None:
        self.trace_id = trace_id
        self.sampled = sampled
        self.attributes: dict[str, Any] = {}
        self.dirty = False
        self.root_ended = False


class Observation:
    """An open span of work. Use as a context manager to make it current and end it on exit."""

    __slots__ = (
        "_client",
        "_ended",
        "_is_root",
        "_token",
        "completion_start_ns",
        "cost",
        "end_ns",
        "id",
        "input",
        "kind",
        "level",
        "metadata",
        "model",
        "model_parameters",
        "name",
        "output",
        "parent_id",
        "provider",
        "start_ns",
        "status_message",
        "trace",
        "usage",
    )

    def __init__(
        self,
        client: Client,
        trace: TraceState,
        observation_id: str,
        parent_id: str | None,
        kind: str,
        name: str,
        start_ns: int,
        is_root: bool,
    ) -> None:
        self._client = client
        self.trace = trace
        self.id = observation_id
        self.parent_id = parent_id
        self.kind = kind
        self.name = name
        self.start_ns = start_ns
        self._is_root = is_root
        self._ended = False
        self._token: Token[Observation | None] | None = None
        self.end_ns: int | None = None
        self.level = "DEFAULT"
        self.status_message: str | None = None
        self.input: Any = None
        self.output: Any = None
        self.metadata: dict[str, Any] | None = None
        self.model: str | None = None
        self.provider: str | None = None
        self.model_parameters: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self.cost: dict[str, Any] | None = None
        self.completion_start_ns: int | None = None

    @property
    def trace_id(self) -> str:
        return self.trace.trace_id

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def traceparent(self) -> str:
        """W3C `traceparent` header continuing this trace under this observation elsewhere."""
        return format_traceparent(self.trace.trace_id, self.id, self.trace.sampled)

    def update(
        self,
        *,
        name: str | None = None,
        input: Any = UNSET,
        output: Any = UNSET,
        metadata: Mapping[str, Any] | None = None,
        level: str | None = None,
        status_message: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        model_parameters: Mapping[str, Any] | None = None,
        usage: Mapping[str, Any] | None = None,
        cost: Mapping[str, Any] | None = None,
        completion_start_time: Any = None,
    ) -> Observation:
        """Set fields of the open observation; metadata merges key by key."""
        if name is not None:
            self.name = name
        if input is not UNSET:
            self.input = input
        if output is not UNSET:
            self.output = output
        if metadata is not None:
            self.metadata = {**(self.metadata or {}), **metadata}
        if level is not None:
            self.set_level(level)
        if status_message is not None:
            self.status_message = status_message
        if model is not None:
            self.model = model
        if provider is not None:
            self.provider = provider
        if model_parameters is not None:
            self.model_parameters = dict(model_parameters)
        if usage is not None:
            self.usage = normalize_usage(usage)
        if cost is not None:
            self.cost = dict(cost)
        if completion_start_time is not None:
            self.completion_start_ns = to_unix_nano(completion_start_time)
        if self._ended:
            self._client._emit_observation(self)
        return self

    def set_level(self, level: str) -> None:
        upper = level.upper()
        if upper in LEVELS:
            self.level = upper
        else:
            self._client._report_invalid(f"level {level!r} is not one of {sorted(LEVELS)}")

    def update_trace(
        self,
        *,
        name: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        release: str | None = None,
        environment: str | None = None,
        input: Any = UNSET,
        output: Any = UNSET,
    ) -> Observation:
        """Set trace-level attributes (tags accumulate, metadata merges)."""
        self._client._update_trace(
            self.trace,
            {
                "name": name,
                "user_id": user_id,
                "session_id": session_id,
                "tags": tags,
                "metadata": metadata,
                "release": release,
                "environment": environment,
                "input": input,
                "output": output,
            },
        )
        return self

    def score(self, name: str, value: float | str | bool, **options: Any) -> None:
        """Score this observation; options as for `Client.score`."""
        self._client.score(
            name, value, trace_id=self.trace.trace_id, observation_id=self.id, **options
        )

    def score_trace(self, name: str, value: float | str | bool, **options: Any) -> None:
        """Score the whole trace this observation belongs to."""
        self._client.score(name, value, trace_id=self.trace.trace_id, **options)

    def record_exception(self, error: BaseException) -> None:
        self.level = "ERROR"
        self.status_message = f"{type(error).__name__}: {error}"

    def end(self, end_time: Any = None) -> None:
        """End the observation (once; later calls are ignored) and send its final snapshot."""
        if self._ended:
            return
        self.end_ns = time.time_ns() if end_time is None else to_unix_nano(end_time)
        self._ended = True
        self._client._emit_observation(self)
        if self._is_root:
            self._client._root_ended(self.trace)

    def __enter__(self) -> Observation:
        self._token = current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, GeneratorExit):
            self.record_exception(exc)
        self.end()
        if self._token is not None:
            # Exited in another context than entered (e.g. across tasks): nothing to undo there.
            with contextlib.suppress(ValueError):
                current.reset(self._token)
            self._token = None

    def __repr__(self) -> str:
        return f"<Observation {self.kind} {self.name!r} trace={self.trace.trace_id} id={self.id}>"
