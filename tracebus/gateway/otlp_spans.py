"""OTLP spans as tracebus events, read the way Langfuse's OTLP ingestion reads them.

Every span becomes one complete `observation` snapshot (an exported span has ended, so there is
nothing to patch later). Trace-level attributes — which Langfuse SDKs copy onto every span — become
one `trace` event per trace and request. Attribute precedence follows Langfuse's server, so an app
that sends to Langfuse today gets the same traces through tracebus.

Event ids are derived from the event's content, so an exporter that retries a request produces
the same ids and the stream applies the events once; a changed span gets a new id and, being
newer, replaces the earlier snapshot."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from tracebus.schemas import SCHEMA_VERSION, normalize_usage
from tracebus.sinks.langfuse.environment import langfuse_environment

_SHORT_TEXT = 1000
_COST_DECIMALS = 12
_EVENT_ID_PREFIX = "otlp"
_LANGFUSE_SCOPE = "langfuse-sdk"
_OBSERVATION_METADATA = "langfuse.observation.metadata"
_TRACE_METADATA = "langfuse.trace.metadata"
_UNNAMED = "unnamed"


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
    traces: dict[str, _TraceAttributes] = {}
    for where, span, scope_spans, resource in _spans(request):
        observation, trace_fields = _SpanReader(span, where, scope_spans, resource).read()
        observations.append(Translated(where, observation))
        trace_id = observation["trace_id"]
        trace = traces.setdefault(trace_id, _TraceAttributes(trace_id, where))
        trace.add(trace_fields, observation["timestamp_unix_nano"])
    events = [Translated(t.where, event) for t in traces.values() if (event := t.event())]
    return events + observations


def span_location(resource: int, scope: int, span: int) -> str:
    """Where a span sits in an export request, in OTLP/JSON field names."""
    return f"resourceSpans[{resource}].scopeSpans[{scope}].spans[{span}]"


def _spans(
    request: ExportTraceServiceRequest,
) -> Iterator[tuple[str, Span, ScopeSpans, dict[str, Any]]]:
    for i, resource_spans in enumerate(request.resource_spans):
        resource = attribute_values(resource_spans.resource.attributes)
        for j, scope_spans in enumerate(resource_spans.scope_spans):
            for k, span in enumerate(scope_spans.spans):
                name = f" ({span.name!r})" if span.name else ""
                yield f"span {span_location(i, j, k)}{name}", span, scope_spans, resource


def attribute_values(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP attributes as plain JSON values."""
    return {kv.key: plain_value(kv.value) for kv in key_values}


def plain_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attribute_values(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)  # JSON has no NaN or infinity; Langfuse keeps the text
    return getattr(value, kind)


# --- reading one span ------------------------------------------------------------------------


@dataclass
class _Attributes:
    """A span's attributes, remembering which were read so the rest can go to metadata."""

    values: dict[str, Any]
    used: set[str] = field(default_factory=set)

    def first(self, *keys: str) -> tuple[str, Any] | None:
        """The first key with a non-empty value, and that value."""
        for key in keys:
            value = self.values.get(key)
            if value is not None and value != "" and value != []:
                self.used.add(key)
                return key, value
        return None

    def get(self, *keys: str) -> Any:
        found = self.first(*keys)
        return found[1] if found else None

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """Values of keys starting with `prefix`, keyed by the rest of the key."""
        found = {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}
        self.used.update(prefix + key for key in found)
        return found

    def discard(self, keys: Iterable[str]) -> None:
        self.used.update(keys)

    def remaining(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k not in self.used}


_KINDS = frozenset(
    {
        "span",
        "generation",
        "event",
        "embedding",
        "agent",
        "tool",
        "chain",
        "retriever",
        "guardrail",
        "evaluator",
    }
)
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
    def __init__(
        self, span: Span, where: str, scope_spans: ScopeSpans, resource: dict[str, Any]
    ) -> None:
        self.span = span
        self.where = where
        self.scope = scope_spans.scope
        self.resource = resource
        self.attributes = _Attributes(attribute_values(span.attributes))
        # Langfuse's v5 SDKs JSON-encode every metadata value, strings included.
        self.metadata_json = (
            self.scope.name.startswith(_LANGFUSE_SCOPE) and _major(self.scope.version) >= 5
        )

    def read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The span's observation event, and its trace-level attributes."""
        observation = self._observation()
        trace_fields = self._trace_fields(observation)
        # Last, so that metadata keeps exactly the attributes no field took.
        observation["metadata"] = self._metadata()
        return _with_event_id(_present(observation), observation["observation_id"]), trace_fields

    def _observation(self) -> dict[str, Any]:
        trace_id, observation_id, parent = self._ids()
        start, end = self._times()
        attributes = self.attributes
        if _truthy(attributes.get("langfuse.internal.as_root")):
            # Langfuse makes such a span its trace's root; the langfuse SDK gives it a parent
            # (from a trace context) that is never sent, which would leave the trace rootless.
            parent = None
        input_value, output_value = _input_output(attributes, self.span.events)
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
            "model": _short(attributes.get(*_MODEL_KEYS)),
            "provider": _short(attributes.get(*_PROVIDER_KEYS)),
            "model_parameters": _model_parameters(attributes),
            "usage": _usage(attributes),
            "cost": _cost(attributes),
            "completion_start_time_unix_nano": _completion_start(attributes, start),
        }

    def _trace_fields(self, observation: dict[str, Any]) -> dict[str, Any]:
        """Trace-level attributes of this span (its own, else its resource's)."""
        attributes = self.attributes
        is_root = observation["parent_observation_id"] is None
        name = attributes.get("langfuse.trace.name") or self.resource.get("langfuse.trace.name")
        fields = {
            "name": _short(name),
            "root_name": observation["name"] if is_root else None,
            "user_id": _short(self._trace_value(*_USER_KEYS)),
            "session_id": _short(self._trace_value(*_SESSION_KEYS)),
            "tags": _tags(self._trace_value(*_TAG_KEYS)),
            "metadata": {
                **_metadata(self.resource, _TRACE_METADATA, self.metadata_json),
                **self._prefixed_metadata(_TRACE_METADATA),
            },
            "release": _short(self._trace_value("langfuse.release")),
            "environment": langfuse_environment(_text(self._environment())),
            "input": _json_text(attributes.get("langfuse.trace.input")),
            "output": _json_text(attributes.get("langfuse.trace.output")),
        }
        return {k: v for k, v in fields.items() if v not in (None, [], {})}

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
        return _short(override) or _short(self.span.name) or _UNNAMED

    def _metadata(self) -> dict[str, Any] | None:
        """The span's Langfuse metadata, plus what no field took: its other attributes, its
        resource's attributes and its instrumentation scope (as Langfuse keeps them)."""
        metadata = self._prefixed_metadata(_OBSERVATION_METADATA)
        scope = _present({"name": self.scope.name or None, "version": self.scope.version or None})
        extra = {
            "attributes": self.attributes.remaining(),
            "resourceAttributes": self.resource,
            "scope": scope,
        }
        metadata.update({key: value for key, value in extra.items() if value})
        return metadata or None

    def _prefixed_metadata(self, prefix: str) -> dict[str, Any]:
        attributes = self.attributes
        found = _metadata(attributes.values, prefix, self.metadata_json)
        attributes.discard(
            k for k in attributes.values if k == prefix or k.startswith(f"{prefix}.")
        )
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
    return next((values[k] for k in keys if values.get(k) not in (None, "", [])), None)


def _major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


def _truthy(value: Any) -> bool:
    return value is True or value == "true"


# --- trace attributes ------------------------------------------------------------------------


class _TraceAttributes:
    """The trace-level attributes the spans of one trace carry in one request, merged: later
    spans win for single values, tags accumulate, metadata merges key by key."""

    def __init__(self, trace_id: str, where: str) -> None:
        self.trace_id = trace_id
        self.where = where
        self.fields: dict[str, Any] = {}
        self.timestamp = 0

    def add(self, fields: dict[str, Any], timestamp: int) -> None:
        if not fields:
            return
        self.timestamp = max(self.timestamp, timestamp)
        for key, value in fields.items():
            if key == "tags":
                self.fields["tags"] = list(dict.fromkeys([*self.fields.get("tags", []), *value]))
            elif key == "metadata":
                self.fields["metadata"] = {**self.fields.get("metadata", {}), **value}
            else:
                self.fields[key] = value

    def event(self) -> dict[str, Any] | None:
        fields = dict(self.fields)
        root_name = fields.pop("root_name", None)
        if not fields and root_name is None:
            return None
        fields.setdefault("name", root_name)  # Langfuse names a trace after its root span
        event = {
            "schema_version": SCHEMA_VERSION,
            "type": "trace",
            "trace_id": self.trace_id,
            "timestamp_unix_nano": self.timestamp,
            **_present(fields),
        }
        return _with_event_id(event, self.trace_id)


def _tags(value: Any) -> list[str] | None:
    """Tags as Langfuse accepts them: a string array, a JSON array string, a comma-separated
    string, or one string."""
    if value is None:
        return None
    if isinstance(value, str):
        decoded = _json_text(value)
        if isinstance(decoded, list):
            value = decoded
        else:
            value = value.split(",") if "," in value else [value]
    if not isinstance(value, list):
        value = [value]
    tags = (_short(tag.strip() if isinstance(tag, str) else tag) for tag in value)
    return [tag for tag in tags if tag] or None


# --- metadata, input and output --------------------------------------------------------------


def _metadata(values: Mapping[str, Any], prefix: str, values_are_json: bool) -> dict[str, Any]:
    """Metadata from one JSON-object attribute `prefix` and attributes `prefix.<key>`."""
    whole = _json_text(values.get(prefix))
    metadata = dict(whole) if isinstance(whole, dict) else {}
    for key, value in values.items():
        if key.startswith(f"{prefix}."):
            metadata[key[len(prefix) + 1 :]] = _decoded(value) if values_are_json else value
    return metadata


def _decoded(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def _json_text(value: Any) -> Any:
    """A JSON object or array sent as text, decoded; anything else as it is (a plain string
    stays a string even when it happens to parse as a number)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        return _decoded(value)
    return value


_IO_PAIRS = (
    ("langfuse.observation.input", "langfuse.observation.output"),
    ("mlflow.spanInputs", "mlflow.spanOutputs"),
    ("traceloop.entity.input", "traceloop.entity.output"),
    ("input.value", "output.value"),
    ("input", "output"),
    ("tool_arguments", "tool_response"),
)
_IO_PREFIXES = (
    ("gen_ai.prompt.", "gen_ai.completion."),
    ("llm.input_messages.", "llm.output_messages."),
)
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_IO_KEYS = frozenset(
    {
        *(key for pair in _IO_PAIRS for key in pair),
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "langfuse.trace.input",
        "langfuse.trace.output",
    }
)


def _input_output(attributes: _Attributes, events: Sequence[Span.Event]) -> tuple[Any, Any]:
    """Input and output from the first convention that has them, in Langfuse's order. Every
    input/output attribute is then left out of metadata, as Langfuse does, so a payload is
    never stored twice."""
    values = attributes.values
    found = _first_pair(values, _IO_PAIRS[:1]) or _from_events(events)
    found = found or _first_pair(values, _IO_PAIRS[1:]) or _from_prefixes(values)
    found = found or _from_gen_ai_messages(values) or _first_pair(values, _TOOL_CALL_PAIR)
    attributes.discard(k for k in values if k in _IO_KEYS or k.startswith(_IO_PREFIX_KEYS))
    return found or (None, None)


_TOOL_CALL_PAIR = (("gen_ai.tool.call.arguments", "gen_ai.tool.call.result"),)
_IO_PREFIX_KEYS = tuple(prefix for pair in _IO_PREFIXES for prefix in pair)


def _first_pair(
    values: Mapping[str, Any], pairs: Sequence[tuple[str, str]]
) -> tuple[Any, Any] | None:
    for input_key, output_key in pairs:
        found = _json_text(values.get(input_key)), _json_text(values.get(output_key))
        if any(v not in (None, "") for v in found):
            return found
    return None


def _from_events(events: Sequence[Span.Event]) -> tuple[Any, Any] | None:
    """GenAI semantic-convention events: the inference details event (semconv ≥ 1.37), else
    one event per message and `gen_ai.choice` per output."""
    for event in events:
        if event.name == "gen_ai.client.inference.operation.details":
            found = _from_gen_ai_messages(attribute_values(event.attributes))
            if found:
                return found
    messages = [
        {"role": _MESSAGE_EVENTS[e.name], **attribute_values(e.attributes)}
        for e in events
        if e.name in _MESSAGE_EVENTS
    ]
    choices = [attribute_values(e.attributes) for e in events if e.name == "gen_ai.choice"]
    if not messages and not choices:
        return None
    return messages or None, (choices[0] if len(choices) == 1 else choices or None)


def _from_gen_ai_messages(values: Mapping[str, Any]) -> tuple[Any, Any] | None:
    messages = _json_text(values.get("gen_ai.input.messages"))
    output = _json_text(values.get("gen_ai.output.messages"))
    if messages in (None, "") and output in (None, ""):
        return None
    instructions = _json_text(values.get("gen_ai.system_instructions"))
    if instructions and isinstance(messages, list):
        messages = [{"role": "system", "parts": instructions}, *messages]
    return messages, output


def _from_prefixes(values: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """Flattened message lists (`gen_ai.prompt.0.role`, `llm.input_messages.0.message.content`)
    rebuilt as JSON."""
    for input_prefix, output_prefix in _IO_PREFIXES:
        found = _unflatten(values, input_prefix), _unflatten(values, output_prefix)
        if any(v is not None for v in found):
            return found
    return None


def _unflatten(values: Mapping[str, Any], prefix: str) -> Any:
    tree: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(prefix):
            *path, leaf = key[len(prefix) :].split(".")
            node = tree
            for part in path:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[leaf] = value
    return _as_lists(tree) if tree else None


def _as_lists(node: Any) -> Any:
    """Objects keyed 0, 1, … as arrays, in index order (gaps closed, so a huge index costs
    nothing)."""
    if not isinstance(node, dict):
        return node
    converted = {key: _as_lists(value) for key, value in node.items()}
    if all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


# --- generation fields -----------------------------------------------------------------------


def _model_parameters(attributes: _Attributes) -> dict[str, Any] | None:
    explicit = attributes.first(
        "langfuse.observation.model.parameters", "llm.invocation_parameters", "model_config"
    )
    parameters = _json_text(explicit[1]) if explicit else None
    if not isinstance(parameters, dict):
        parameters = {
            key: value
            for key, value in attributes.prefixed("gen_ai.request.").items()
            if key != "model"
        }
    kept = {
        str(key): value if _scalar(value) else orjson.dumps(value).decode()
        for key, value in parameters.items()
    }
    return kept or None


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _completion_start(attributes: _Attributes, start: int) -> int | None:
    found = attributes.get("langfuse.observation.completion_start_time")
    if isinstance(found, str):
        # Older Langfuse SDKs send the ISO time JSON-encoded once more.
        return _unix_nano(found.strip('"'))
    first_chunk_ms = attributes.get("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk")
    if isinstance(first_chunk_ms, int | float) and not isinstance(first_chunk_ms, bool):
        return start + math.ceil(first_chunk_ms) * 1_000_000
    return None


_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?")


def _unix_nano(text: str) -> int | None:
    """An ISO 8601 time (UTC when it names no zone) in nanoseconds, keeping every digit."""
    match = _ISO.fullmatch(text.strip())
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    moment = datetime.fromisoformat(seconds + (zone or "").replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    nanos = int((fraction or "0")[:9].ljust(9, "0"))
    return int(moment.timestamp()) * 1_000_000_000 + nanos


# --- usage and cost --------------------------------------------------------------------------

# Keys of generic (inclusive) GenAI usage attributes, after `gen_ai.usage.` / `llm.token_count.`.
_GENERIC_USAGE = {
    "input": ("prompt_tokens", "input_tokens", "prompt"),
    "output": ("completion_tokens", "output_tokens", "completion"),
    "total": ("total_tokens", "total"),
    "input_cache_read": (
        "cache_read.input_tokens",
        "cache_read_input_tokens",
        "cache_read_tokens",
        "details.cache_read_tokens",
        "details.cache_read_input_tokens",
        "prompt_details.cache_read",
        "input_cached_tokens",
    ),
    "input_cache_creation": (
        "cache_creation.input_tokens",
        "cache_creation_input_tokens",
        "cache_write_tokens",
        "details.cache_write_tokens",
        "details.cache_creation_input_tokens",
        "prompt_details.cache_write",
        "input_cache_creation",
    ),
    "input_audio": ("prompt_details.audio",),
    "output_reasoning": ("reasoning.output_tokens", "completion_details.reasoning"),
    "output_audio": ("completion_details.audio",),
}
_PROVIDER_SHAPE = frozenset({"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens"})


def _usage(attributes: _Attributes) -> dict[str, Any] | None:
    """Token usage in tracebus's inclusive buckets: Langfuse's `usage_details` (exclusive
    buckets, or a provider's usage object), else the GenAI / OpenInference token counts."""
    details = _json_text(attributes.values.get("langfuse.observation.usage_details"))
    if isinstance(details, dict):
        attributes.discard(["langfuse.observation.usage_details"])
        if _PROVIDER_SHAPE & details.keys():
            return normalize_usage(details) or None
        return _usage_buckets(_inclusive(_counts(details)))
    generic = {
        **attributes.prefixed("llm.token_count."),
        **{k: v for k, v in attributes.prefixed("gen_ai.usage.").items() if k != "cost"},
    }
    return _usage_buckets(_generic_usage(_counts(generic)))


def _counts(values: Mapping[str, Any]) -> dict[str, int]:
    """Non-negative whole token counts (Langfuse drops anything else), integer strings too."""
    counts = {}
    for key, value in values.items():
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            counts[key] = value
    return counts


def _generic_usage(counts: dict[str, int]) -> dict[str, Any]:
    buckets: dict[str, Any] = {}
    taken: set[str] = set()
    for bucket, keys in _GENERIC_USAGE.items():
        key = next((k for k in keys if k in counts), None)
        if key is not None:
            buckets[bucket] = counts[key]
            taken.update(keys)
    other = {k.removeprefix("details."): v for k, v in counts.items() if k not in taken}
    if "total" not in buckets and ("input" in buckets or "output" in buckets):
        buckets["total"] = buckets.get("input", 0) + buckets.get("output", 0)
    if other:
        buckets["other"] = other
    return buckets


def _bucket(key: str) -> str | None:
    """Where one of Langfuse's exclusive detail keys belongs: a tracebus bucket, the rest of
    input or output counted in its total only (`input_other`, `output_other`), or None for
    neither."""
    if key == "total":
        return "total"
    side = next((s for s in ("input", "output") if key.startswith(s)), None)
    if side is None:
        return None
    rest = key[len(side) :]
    if not rest:
        return side
    parts = (
        (("cache_read", "cached"), "input_cache_read"),
        (("cache_creation", "cache_write"), "input_cache_creation"),
        (("audio",), "input_audio"),
    )
    if side == "output":
        parts = ((("reasoning",), "output_reasoning"), (("audio",), "output_audio"))
    found = (bucket for marks, bucket in parts if any(mark in rest for mark in marks))
    return next(found, f"{side}_other")


def _inclusive(details: Mapping[str, float]) -> dict[str, Any]:
    """Langfuse's exclusive details (every key priced on its own; `input`/`output` without the
    parts listed beside them) as inclusive buckets: `input` sums every input key, `output`
    every output key; keys of neither side go to `other`."""
    buckets: dict[str, Any] = {}
    other: dict[str, float] = {}
    for key, amount in details.items():
        bucket = _bucket(key)
        if bucket is None:
            other[key] = amount
            continue
        if bucket != "total":
            side = bucket.split("_")[0]
            buckets[side] = buckets.get(side, 0) + amount
        if bucket not in ("input", "output", "input_other", "output_other"):
            buckets[bucket] = buckets.get(bucket, 0) + amount
    if "total" not in buckets and ("input" in buckets or "output" in buckets):
        buckets["total"] = buckets.get("input", 0) + buckets.get("output", 0)
    if other:
        buckets["other"] = other
    return buckets


def _usage_buckets(buckets: dict[str, Any]) -> dict[str, Any] | None:
    usage = {(k if k == "other" else f"{k}_tokens"): v for k, v in buckets.items()}
    return usage or None


def _cost(attributes: _Attributes) -> dict[str, Any] | None:
    """Cost in USD: Langfuse's `cost_details` (exclusive) as inclusive buckets, else a total."""
    details = _json_text(attributes.values.get("langfuse.observation.cost_details"))
    if isinstance(details, dict):
        attributes.discard(["langfuse.observation.cost_details"])
        amounts = {
            k: float(v)
            for k, v in details.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
        }
        return _usd(_inclusive(amounts)) or None
    total = attributes.get("gen_ai.usage.cost", "llm.cost.total")
    if isinstance(total, int | float) and not isinstance(total, bool) and total >= 0:
        return {"total": float(total)}
    return None


def _usd(amounts: dict[str, Any]) -> dict[str, Any]:
    # Summing exclusive parts leaves float dust such as 0.0021000000000000003; no price is
    # that precise.
    return {
        key: _usd(value) if isinstance(value, dict) else round(value, _COST_DECIMALS)
        for key, value in amounts.items()
    }


# --- event assembly --------------------------------------------------------------------------


def _short(value: Any) -> str | None:
    """Text for a short field (1–1000 characters): non-strings as JSON, longer text cut."""
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text[:_SHORT_TEXT] or None


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _with_event_id(event: dict[str, Any], subject: str) -> dict[str, Any]:
    """`event` with an id that depends only on its content: `otlp:<subject>:<digest>`."""
    digest = hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()
    room = 64 - len(_EVENT_ID_PREFIX) - len(subject) - 2
    return {**event, "event_id": f"{_EVENT_ID_PREFIX}:{subject}:{digest[:room]}"}
