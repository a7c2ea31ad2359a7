"""OTLP export requests for the tests, built the way OpenTelemetry SDKs build them, and their
OTLP/JSON form (hex ids, int64 as strings, enums as numbers)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracebus.otlp_attributes import key_values

TRACE_ID = "5b8efff798038103d269b633813fc60c"
ROOT_ID = "eee19b7ec3c1b174"
CHILD_ID = "0f1e2d3c4b5a6978"
START = 1_790_000_000_000_000_000
SECOND = 1_000_000_000


def span(
    name: str = "step",
    *,
    trace_id: str = TRACE_ID,
    span_id: str = ROOT_ID,
    parent: str | None = None,
    start: int = START,
    end: int | None = START + SECOND,
    attributes: Mapping[str, Any] | None = None,
    events: Sequence[tuple[str, Mapping[str, Any]]] = (),
    error: str | None = None,
) -> Span:
    built = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start,
        end_time_unix_nano=end or 0,
        attributes=key_values(attributes or {}),
        events=[
            Span.Event(name=n, time_unix_nano=start, attributes=key_values(a)) for n, a in events
        ],
    )
    if error is not None:
        built.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    return built


def export(
    *spans: Span,
    resource: Mapping[str, Any] | None = None,
    scope: tuple[str, str] = ("my-app", "1.0.0"),
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values(resource or {"service.name": "shop"}))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = scope
    scope_spans.spans.extend(spans)
    return request


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """`request` as an OTLP/JSON exporter sends it."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for encoded in scope_spans.get("spans", []):
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in encoded:
                        encoded[field] = _hex(encoded[field])
    return orjson.dumps(document)


def _hex(base64_id: str) -> str:
    return base64.b64decode(base64_id).hex()
