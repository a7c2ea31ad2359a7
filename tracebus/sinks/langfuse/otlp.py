"""Complete traces as one OTLP export request, in the attributes Langfuse reads.

One span per observation. Langfuse v4 stores each span as one row keyed by span id and start
time, replacing an earlier row with the same key, so each span carries everything: the
observation, the trace-level attributes (v4 reads them per span, not from the root) and the exact
start time of the observation (a different start time would add a second row)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracebus.otlp_attributes import key_values
from tracebus.schemas import Level, TraceDocument
from tracebus.schemas.traces import Observation
from tracebus.sinks.langfuse.details import cost_details, usage_details
from tracebus.sinks.langfuse.environment import langfuse_environment

TRACE_NAME = "langfuse.trace.name"
TRACE_USER_ID = "user.id"
TRACE_SESSION_ID = "session.id"
TRACE_TAGS = "langfuse.trace.tags"
TRACE_METADATA = "langfuse.trace.metadata"
TRACE_INPUT = "langfuse.trace.input"
TRACE_OUTPUT = "langfuse.trace.output"
ENVIRONMENT = "langfuse.environment"
RELEASE = "langfuse.release"
OBSERVATION_TYPE = "langfuse.observation.type"
OBSERVATION_INPUT = "langfuse.observation.input"
OBSERVATION_OUTPUT = "langfuse.observation.output"
OBSERVATION_METADATA = "langfuse.observation.metadata"
OBSERVATION_LEVEL = "langfuse.observation.level"
OBSERVATION_STATUS_MESSAGE = "langfuse.observation.status_message"
OBSERVATION_MODEL = "langfuse.observation.model.name"
OBSERVATION_MODEL_PARAMETERS = "langfuse.observation.model.parameters"
OBSERVATION_USAGE_DETAILS = "langfuse.observation.usage_details"
OBSERVATION_COST_DETAILS = "langfuse.observation.cost_details"
OBSERVATION_COMPLETION_START_TIME = "langfuse.observation.completion_start_time"

SERVICE_NAME = "tracebus"
# Not "langfuse-sdk…": such scopes switch on the server's heuristics for the Python SDK's own
# spans. The price is that Langfuse also copies the span attributes into metadata.attributes.
SCOPE_NAME = "tracebus"
METADATA_KEY = "tracebus"
"""Key of the block tracebus adds to each observation's metadata (revision, flags, …)."""

AttributeValue = str | int | float | bool | list[str]


def _tracebus_version() -> str:
    try:
        return version("tracebus")
    except PackageNotFoundError:
        return "unknown"


TRACEBUS_VERSION = _tracebus_version()


def to_otlp_request(documents: Sequence[TraceDocument]) -> ExportTraceServiceRequest:
    """All observations of all `documents` as the spans of one request (empty without any)."""
    request = ExportTraceServiceRequest()
    spans = [span for document in documents for span in document_spans(document)]
    if not spans:
        return request
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        key_values({"service.name": SERVICE_NAME, "service.version": TRACEBUS_VERSION})
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = SCOPE_NAME
    scope_spans.scope.version = TRACEBUS_VERSION
    scope_spans.spans.extend(spans)
    return request


def document_spans(document: TraceDocument) -> list[Span]:
    shared = trace_attributes(document)
    carrier = trace_io_observation_id(document)
    return [
        _span(document, observation, shared, carries_trace_io=observation.observation_id == carrier)
        for observation in document.observations
    ]


def trace_io_observation_id(document: TraceDocument) -> str | None:
    """The observation whose span carries the trace's input and output: the root; without one,
    the earliest observation without a parent, else the earliest whose parent never arrived.

    An orphan keeps its parentSpanId (Langfuse accepts an unknown parent, and the tracebus
    flags in its metadata say why the tree is broken), so only the trace I/O needs a home."""
    if document.root_observation_id is not None:
        return document.root_observation_id
    known = {o.observation_id for o in (*document.ancestors, *document.observations)}
    parentless = [o for o in document.observations if o.parent_observation_id is None]
    orphans = [
        o
        for o in document.observations
        if o.parent_observation_id is not None and o.parent_observation_id not in known
    ]
    tops = parentless or orphans
    if not tops:
        return None  # no top here: they are in other parts, or on a cycle
    return min(tops, key=lambda o: o.start_time_unix_nano).observation_id


def trace_attributes(document: TraceDocument) -> dict[str, AttributeValue]:
    """The trace-level attributes every span of the trace carries."""
    trace = document.trace
    return _present(
        {
            TRACE_NAME: trace.name,
            TRACE_USER_ID: trace.user_id,
            TRACE_SESSION_ID: trace.session_id,
            TRACE_TAGS: list(trace.tags) or None,
            TRACE_METADATA: _json(trace.metadata) if trace.metadata else None,
            ENVIRONMENT: langfuse_environment(trace.environment),
            RELEASE: trace.release,
        }
    )


def observation_attributes(
    document: TraceDocument, observation: Observation
) -> dict[str, AttributeValue]:
    """What Langfuse reads of one observation, without the trace-level attributes."""
    block = _tracebus_block(document, observation)
    metadata = {**(observation.metadata or {}), METADATA_KEY: block}
    completion_start = observation.completion_start_time_unix_nano
    return _present(
        {
            OBSERVATION_TYPE: str(observation.kind),
            OBSERVATION_LEVEL: str(observation.level),
            OBSERVATION_STATUS_MESSAGE: observation.status_message,
            OBSERVATION_INPUT: _text(observation.input),
            OBSERVATION_OUTPUT: _text(observation.output),
            OBSERVATION_METADATA: _json(metadata),
            OBSERVATION_MODEL: observation.model,
            OBSERVATION_MODEL_PARAMETERS: _model_parameters(observation.model_parameters),
            OBSERVATION_USAGE_DETAILS: _json_or_none(
                usage_details(observation.usage) if observation.usage else None
            ),
            OBSERVATION_COST_DETAILS: _json_or_none(
                cost_details(observation.cost) if observation.cost else None
            ),
            OBSERVATION_COMPLETION_START_TIME: (
                iso_8601(completion_start) if completion_start is not None else None
            ),
        }
    )


def iso_8601(unix_nano: int) -> str:
    """UTC time with microseconds, e.g. 2025-05-01T12:00:00.123456Z."""
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _span(
    document: TraceDocument,
    observation: Observation,
    shared: dict[str, AttributeValue],
    *,
    carries_trace_io: bool,
) -> Span:
    attributes = {**observation_attributes(document, observation), **shared}
    if carries_trace_io:
        # Deprecated in v4 but still read; older servers show them on the trace.
        attributes.update(
            _present(
                {
                    TRACE_INPUT: _text(document.trace.input),
                    TRACE_OUTPUT: _text(document.trace.output),
                }
            )
        )
    parent = observation.parent_observation_id
    span = Span(
        trace_id=bytes.fromhex(document.trace_id),
        span_id=bytes.fromhex(observation.observation_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=observation.name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=observation.start_time_unix_nano,
        end_time_unix_nano=observation.end_time_unix_nano,
        attributes=key_values(attributes),
    )
    if observation.level == Level.ERROR:
        span.status.CopyFrom(
            Status(code=Status.STATUS_CODE_ERROR, message=observation.status_message or "")
        )
    return span


def _tracebus_block(document: TraceDocument, observation: Observation) -> dict[str, Any]:
    """Pipeline facts worth seeing in Langfuse; `revision` shows which publication is stored."""
    block: dict[str, Any] = {"revision": document.revision, "completed_by": document.completed_by}
    if document.part > 1 or (document.parts or 1) > 1:
        block.update(part=document.part, parts=document.parts)
    optional = {
        "provider": observation.provider,
        "cost_source": observation.cost_source,
        "flags": list(observation.flags) or None,
        "truncated": [t.model_dump() for t in observation.truncated or []] or None,
    }
    block.update(_present(optional))
    return block


def _model_parameters(parameters: Mapping[str, Any] | None) -> str | None:
    """A JSON object of strings and numbers, the only values Langfuse keeps as they are."""
    if not parameters:
        return None
    kept = {
        name: _json(value) if isinstance(value, bool) else value
        for name, value in parameters.items()
        if value is not None
    }
    return _json(kept) if kept else None


def _text(value: Any) -> str | None:
    """Strings as they are (as Langfuse's SDK sends them), anything else as JSON text."""
    if value is None or isinstance(value, str):
        return value
    return _json(value)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_or_none(value: Mapping[str, Any] | None) -> str | None:
    return _json(value) if value else None


def _present(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}
