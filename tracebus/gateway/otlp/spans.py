"""OTLP spans as tracebus events, read the way Langfuse's OTLP ingestion reads them.

Every span becomes one complete `observation` snapshot (an exported span has ended, so there is
nothing to patch later). Trace-level attributes — which Langfuse SDKs copy onto every span — become
one `trace` event per trace and request. Attribute precedence follows Langfuse's server, so an app
that sends to Langfuse today gets the same traces through tracebus."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from tracebus.gateway.json_values import as_scalar, is_number, without_none
from tracebus.gateway.otlp.attributes import (
    Attributes,
    attribute_values,
    decoded,
    parse_json_text,
)
from tracebus.gateway.otlp.events import short_text, with_event_id
from tracebus.gateway.otlp.input_output import input_output
from tracebus.gateway.otlp.traces import TraceAttributes
from tracebus.gateway.otlp.usage import read_cost, read_usage
from tracebus.gateway.timestamps import fraction_nanos, unix_nano
from tracebus.schemas import SCHEMA_VERSION, ObservationKind
from tracebus.sinks.langfuse.environment import langfuse_environment

_LANGFUSE_SCOPE = "langfuse-sdk"
_OBSERVATION_METADATA = "langfuse.observation.metadata"
_TRACE_METADATA = "langfuse.trace.metadata"
_UNNAMED = "unnamed"
# The values a trace field counts as absent with (built once, not per span).
_NOT_SET = (None, [], {})


class InvalidSpan(ValueError):
    """A span that cannot become an event; the message names the span and says why."""


class Translated(NamedTuple):
    """An event and the span it came from, to name in an error."""

    where: str
    event: dict[str, Any]


def translate(request: ExportTraceServiceRequest) -> list[Translated]:
    """The events of every span in `request`: per trace, its `trace` event (when any span carries
    trace attributes or is a root), then one observation per span. Raises InvalidSpan."""
    observations: list[Translated] = []
    traces: dict[str, TraceAttributes] = {}
    for where, span, scope in _spans(request):
        observation, trace_fields = _SpanReader(span, where, scope).read()
        observations.append(Translated(where, observation))
        trace_id = observation["trace_id"]
        trace = traces.setdefault(trace_id, TraceAttributes(trace_id, where))
        trace.add(trace_fields, observation["timestamp_unix_nano"])
    events = [Translated(t.where, event) for t in traces.values() if (event := t.event())]
    return events + observations


def span_location(resource: int, scope: int, span: int) -> str:
    """Where a span sits in an export request, in OTLP/JSON field names."""
    return f"resourceSpans[{resource}].scopeSpans[{scope}].spans[{span}]"


class _Scope:
    """What every span of one instrumentation scope shares, worked out once per scope rather
    than once per span."""

    def __init__(self, scope_spans: ScopeSpans, resource: dict[str, Any]) -> None:
        scope = scope_spans.scope
        self.resource = resource
        # Langfuse's v5 SDKs JSON-encode every metadata value, strings included.
        self.metadata_json = scope.name.startswith(_LANGFUSE_SCOPE) and _major(scope.version) >= 5
        self.metadata = without_none({"name": scope.name or None, "version": scope.version or None})
        self.trace_metadata = _metadata(resource, _TRACE_METADATA, self.metadata_json)


def _spans(request: ExportTraceServiceRequest) -> Iterator[tuple[str, Span, _Scope]]:
    for i, resource_spans in enumerate(request.resource_spans):
        resource = attribute_values(resource_spans.resource.attributes)
        for j, scope_spans in enumerate(resource_spans.scope_spans):
            scope = _Scope(scope_spans, resource)
            for k, span in enumerate(scope_spans.spans):
                name = f" ({span.name!r})" if span.name else ""
                yield f"span {span_location(i, j, k)}{name}", span, scope


# --- reading one span ------------------------------------------------------------------------

# Langfuse's observation types are tracebus's kinds.
_KINDS = frozenset(kind.value for kind in ObservationKind)
_OPENINFERENCE_KINDS = {
    "LLM": "generation",
    "CHAIN": "chain",
    "RETRIEVER": "retriever",
    "EMBEDDING": "embedding",
    "AGENT": "agent",
    "TOOL": "tool",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluator",
}
_GEN_AI_OPERATION_KINDS = {
    "chat": "generation",
    "completion": "generation",
    "text_completion": "generation",
    "generate_content": "generation",
    "generate": "generation",
    "embeddings": "embedding",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "execute_tool": "tool",
}
_MODEL_KEYS = (
    "langfuse.observation.model.name",
    "gen_ai.response.model",
    "ai.model.id",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.model_name",
    "model",
)
_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_LEVELS = {
    "DEBUG": "DEBUG",
    "TRACE": "DEBUG",
    "VERBOSE": "DEBUG",
    "DEFAULT": "DEFAULT",
    "INFO": "DEFAULT",
    "LOG": "DEFAULT",
    "NOTICE": "DEFAULT",
    "OK": "DEFAULT",
    "SUCCESS": "DEFAULT",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "FATAL": "ERROR",
    "CRITICAL": "ERROR",
}


class _SpanReader:
    def __init__(self, span: Span, where: str, scope: _Scope) -> None:
        self.span = span
        self.where = where
        self.scope = scope
        self.resource = scope.resource
        self.metadata_json = scope.metadata_json
        self.attributes = Attributes(attribute_values(span.attributes))

    def read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The span's observation event, and its trace-level attributes."""
        observation = self._observation()
        trace_fields = self._trace_fields(observation)
        # Last, so that metadata keeps exactly the attributes no field took.
        observation["metadata"] = self._metadata()
        return with_event_id(without_none(observation), observation["observation_id"]), trace_fields

    def _observation(self) -> dict[str, Any]:
        trace_id, observation_id, parent = self._ids()
        start, end = self._times()
        attributes = self.attributes
        if _truthy(attributes.get("langfuse.internal.as_root")):
            # Langfuse makes such a span its trace's root; the langfuse SDK gives it a parent
            # (from a trace context) that is never sent, which would leave the trace rootless.
            parent = None
        input_value, output_value = input_output(attributes, self.span.events)
        level = _LEVELS.get(str(attributes.get("langfuse.observation.level") or "").upper())
        return {
            "schema_version": SCHEMA_VERSION,
            "type": "observation",
            "trace_id": trace_id,
            "timestamp_unix_nano": end or start,
            "observation_id": observation_id,
            "parent_observation_id": parent,
            "kind": self._kind(),
            "name": self._name(),
            "start_time_unix_nano": start,
            "end_time_unix_nano": end,
            "level": level or ("ERROR" if self._failed() else "DEFAULT"),
            "status_message": attributes.get("langfuse.observation.status_message")
            or self.span.status.message
            or None,
            "input": input_value,
            "output": output_value,
            "model": short_text(attributes.get(*_MODEL_KEYS)),
            "provider": short_text(attributes.get(*_PROVIDER_KEYS)),
            "model_parameters": _model_parameters(attributes),
            "usage": read_usage(attributes),
            "cost": read_cost(attributes),
            "completion_start_time_unix_nano": _completion_start(attributes, start),
        }

    def _trace_fields(self, observation: dict[str, Any]) -> dict[str, Any]:
        """Trace-level attributes of this span (its own, else its resource's)."""
        attributes = self.attributes
        is_root = observation["parent_observation_id"] is None
        name = attributes.get("langfuse.trace.name") or self.resource.get("langfuse.trace.name")
        fields = {
            "name": short_text(name),
            "root_name": observation["name"] if is_root else None,
            "user_id": short_text(self._trace_value(*_USER_KEYS)),
            "session_id": short_text(self._trace_value(*_SESSION_KEYS)),
            "tags": _tags(self._trace_value(*_TAG_KEYS)),
            "metadata": {
                **self.scope.trace_metadata,
                **self._prefixed_metadata(_TRACE_METADATA),
            },
            "release": short_text(self._trace_value("langfuse.release")),
            "environment": langfuse_environment(_text(self._environment())),
            "input": parse_json_text(attributes.get("langfuse.trace.input")),
            "output": parse_json_text(attributes.get("langfuse.trace.output")),
        }
        return {k: v for k, v in fields.items() if v not in _NOT_SET}

    def _ids(self) -> tuple[str, str, str | None]:
        span = self.span
        trace_id = self._id("traceId", span.trace_id, 16)
        observation_id = self._id("spanId", span.span_id, 8)
        parent = self._id("parentSpanId", span.parent_span_id, 8) if span.parent_span_id else None
        if parent == observation_id:
            raise InvalidSpan(f"{self.where}: parentSpanId is the span's own spanId")
        return trace_id, observation_id, parent

    def _id(self, name: str, value: bytes, size: int) -> str:
        if len(value) != size:
            raise InvalidSpan(f"{self.where}: {name} is {len(value)} bytes; it must be {size}")
        if not any(value):
            raise InvalidSpan(f"{self.where}: {name} is all zeros, which W3C trace context forbids")
        return value.hex()

    def _times(self) -> tuple[int, int | None]:
        start, end = self.span.start_time_unix_nano, self.span.end_time_unix_nano
        if not start and not end:
            raise InvalidSpan(f"{self.where}: startTimeUnixNano and endTimeUnixNano are both 0")
        # As Langfuse does: a missing start is the end; a missing end means still open.
        return start or end, end or None

    def _failed(self) -> bool:
        return self.span.status.code == Status.STATUS_CODE_ERROR

    def _kind(self) -> str:
        attributes = self.attributes
        declared = attributes.values.get("langfuse.observation.type")
        if declared in _KINDS:
            attributes.discard(["langfuse.observation.type"])
            return str(declared)
        for key, kinds in (
            ("openinference.span.kind", _OPENINFERENCE_KINDS),
            ("gen_ai.operation.name", _GEN_AI_OPERATION_KINDS),
        ):
            kind = kinds.get(str(attributes.values.get(key)))
            if kind:
                attributes.discard([key])
                return kind
        if attributes.first("gen_ai.tool.name", "gen_ai.tool.call.id"):
            return "tool"
        if attributes.first(*_MODEL_KEYS):
            return "generation"
        return "span"

    def _name(self) -> str:
        override = self.attributes.get("gen_ai.tool.name", "logfire.msg", "ai.toolCall.name")
        return short_text(override) or short_text(self.span.name) or _UNNAMED

    def _metadata(self) -> dict[str, Any] | None:
        """The span's Langfuse metadata, plus what no field took: its other attributes, its
        resource's attributes and its instrumentation scope (as Langfuse keeps them)."""
        metadata = self._prefixed_metadata(_OBSERVATION_METADATA)
        extra = {
            "attributes": self.attributes.remaining(),
            "resourceAttributes": self.resource,
            "scope": self.scope.metadata,
        }
        metadata.update({key: value for key, value in extra.items() if value})
        return metadata or None

    def _prefixed_metadata(self, prefix: str) -> dict[str, Any]:
        attributes = self.attributes
        found = _metadata(attributes.values, prefix, self.metadata_json)
        dotted = f"{prefix}."
        attributes.discard(k for k in attributes.values if k == prefix or k.startswith(dotted))
        return found

    def _trace_value(self, *keys: str) -> Any:
        return self.attributes.get(*keys) or _first_of(self.resource, keys)

    def _environment(self) -> Any:
        # Per key, the span before the resource (Langfuse's order).
        for key in _ENVIRONMENT_KEYS:
            value = self.attributes.get(key) or self.resource.get(key)
            if value:
                return value
        return None


_ENVIRONMENT_KEYS = (
    "langfuse.environment",
    "deployment.environment.name",
    "deployment.environment",
)
_USER_KEYS = (
    "langfuse.user.id",
    "user.id",
    f"{_OBSERVATION_METADATA}.langfuse_user_id",
    f"{_TRACE_METADATA}.langfuse_user_id",
)
_SESSION_KEYS = (
    "langfuse.session.id",
    "session.id",
    "gen_ai.conversation.id",
    f"{_OBSERVATION_METADATA}.langfuse_session_id",
    f"{_TRACE_METADATA}.langfuse_session_id",
)
_TAG_KEYS = (
    "langfuse.trace.tags",
    "langfuse.tags",
    f"{_OBSERVATION_METADATA}.langfuse_tags",
    f"{_TRACE_METADATA}.langfuse_tags",
    "tag.tags",
)


def _first_of(values: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        value = values.get(key)
        if value is not None and value != "" and value != []:
            return value
    return None


def _major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


def _truthy(value: Any) -> bool:
    return value is True or value == "true"


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


def _tags(value: Any) -> list[str] | None:
    """Tags as Langfuse accepts them: a string array, a JSON array string, a comma-separated
    string, or one string."""
    if value is None:
        return None
    if isinstance(value, str):
        from_json = parse_json_text(value)
        if isinstance(from_json, list):
            value = from_json
        else:
            value = value.split(",") if "," in value else [value]
    if not isinstance(value, list):
        value = [value]
    tags = (short_text(tag.strip() if isinstance(tag, str) else tag) for tag in value)
    return [tag for tag in tags if tag] or None


def _metadata(values: Mapping[str, Any], prefix: str, values_are_json: bool) -> dict[str, Any]:
    """Metadata from one JSON-object attribute `prefix` and attributes `prefix.<key>`."""
    whole = parse_json_text(values.get(prefix))
    metadata = dict(whole) if isinstance(whole, dict) else {}
    dotted = f"{prefix}."
    for key, value in values.items():
        if key.startswith(dotted):
            metadata[key[len(dotted) :]] = decoded(value) if values_are_json else value
    return metadata


# --- generation fields -----------------------------------------------------------------------


def _model_parameters(attributes: Attributes) -> dict[str, Any] | None:
    explicit = attributes.first(
        "langfuse.observation.model.parameters", "llm.invocation_parameters", "model_config"
    )
    parameters = parse_json_text(explicit[1]) if explicit else None
    if not isinstance(parameters, dict):
        parameters = {
            key: value
            for key, value in attributes.prefixed("gen_ai.request.").items()
            if key != "model"
        }
    kept = {str(key): as_scalar(value) for key, value in parameters.items()}
    return kept or None


def _completion_start(attributes: Attributes, start: int) -> int | None:
    found = attributes.get("langfuse.observation.completion_start_time")
    if isinstance(found, str):
        # Older Langfuse SDKs send the ISO time JSON-encoded once more.
        return _iso_unix_nano(found.strip('"'))
    first_chunk_ms = attributes.get("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk")
    if is_number(first_chunk_ms):
        return start + math.ceil(first_chunk_ms) * 1_000_000
    return None


_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?")


def _iso_unix_nano(text: str) -> int | None:
    """An ISO 8601 time (UTC when it names no zone) in nanoseconds, keeping every digit."""
    match = _ISO.fullmatch(text.strip())
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(seconds + (zone or "").replace("Z", "+00:00"))
    except ValueError:  # well-formed but impossible, like month 13: ignored as Langfuse does
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return unix_nano(moment) + fraction_nanos(fraction)
