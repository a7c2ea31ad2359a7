"""OTLP export request bodies as `ExportTraceServiceRequest`s: binary protobuf, or OTLP/JSON
(ids as hex, int64 as strings or numbers, enums as numbers or names)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracebus.gateway.otlp.spans import InvalidSpan, span_location
from tracebus.gateway.protocol import GatewayError

_ID_FIELDS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise GatewayError(
            400, f"body is not an OTLP ExportTraceServiceRequest in protobuf: {error}"
        ) from None
    return request


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    if not body.strip():
        return ExportTraceServiceRequest()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise GatewayError(400, f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise GatewayError(400, "an OTLP/JSON body is an object with resourceSpans")
    try:
        _hex_ids_to_base64(document)
        return json_format.ParseDict(
            document, ExportTraceServiceRequest(), ignore_unknown_fields=True
        )
    except InvalidSpan as error:
        raise GatewayError(400, str(error)) from None
    except json_format.ParseError as error:
        raise GatewayError(400, f"body is not an OTLP ExportTraceServiceRequest: {error}") from None


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON carries span and trace ids as hex, where protobuf's JSON mapping (which decodes
    the rest) expects base64: convert them in place. Shapes that are not what OTLP says are left
    for the decoder to report."""
    for i, resource_spans in enumerate(_items(document, "resourceSpans", "resource_spans")):
        for j, scope_spans in enumerate(_items(resource_spans, "scopeSpans", "scope_spans")):
            for k, span in enumerate(_items(scope_spans, "spans")):
                where = f"span {span_location(i, j, k)}"
                _convert_ids(span, where)
                for n, link in enumerate(_items(span, "links")):
                    _convert_ids(link, f"{where}.links[{n}]")


def _items(parent: Any, *names: str) -> list[Any]:
    if not isinstance(parent, dict):
        return []
    found = next((parent[name] for name in names if name in parent), [])
    return found if isinstance(found, list) else []


def _convert_ids(target: Any, where: str) -> None:
    if not isinstance(target, dict):
        return
    for names in _ID_FIELDS:
        for name in names:
            value = target.get(name)
            if isinstance(value, str):
                target[name] = _hex_to_base64(value, f"{where}: {names[0]}")


def _hex_to_base64(value: str, what: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidSpan(f"{what} {value[:40]!r} is not hex (OTLP/JSON ids are hex)") from None
    return base64.b64encode(raw).decode()
