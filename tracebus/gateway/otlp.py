"""The OTLP/HTTP traces endpoint: `POST /v1/traces` for OpenTelemetry exporters, and Langfuse's
`POST /api/public/otel/v1/traces`, so a Langfuse SDK pointed at the gateway works unchanged.

Requests are binary protobuf or OTLP/JSON (ids as hex, int64 as strings or numbers, enums as
numbers or names). A request is accepted whole or not at all: one span that cannot become a
valid event rejects it with 400 naming the span, and nothing of it is published. Answers and
errors come in the request's own encoding, as the OTLP/HTTP specification asks."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tracebus.gateway.otlp_spans import InvalidSpan, span_location, translate
from tracebus.gateway.protocol import Adapter, Call, GatewayError, Route

PATHS = ("/v1/traces", "/api/public/otel/v1/traces")
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


@dataclass(frozen=True)
class _Encoding:
    content_type: str
    decode: Callable[[bytes], ExportTraceServiceRequest]
    encode: Callable[[Message], bytes]

    def response(self, message: Message, status: int = 200) -> web.Response:
        return web.Response(
            status=status, body=self.encode(message), headers={"Content-Type": self.content_type}
        )


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


def _to_json(message: Message) -> bytes:
    return orjson.dumps(json_format.MessageToDict(message))


_ENCODINGS = {
    PROTOBUF: _Encoding(PROTOBUF, decode_protobuf, lambda m: m.SerializeToString()),
    JSON: _Encoding(JSON, decode_json, _to_json),
}
_ID_FIELDS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))


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


def _encoding(content_type: str) -> _Encoding:
    """The encoding a Content-Type names (parameters such as charset ignored)."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/protobuf":
        media_type = PROTOBUF
    encoding = _ENCODINGS.get(media_type)
    if encoding is None:
        raise GatewayError(
            415,
            f"unsupported Content-Type {content_type!r}: send OTLP as {PROTOBUF} or {JSON}",
        )
    return encoding


async def _export(call: Call) -> web.Response:
    encoding = _encoding(call.content_type)
    try:
        translated = translate(encoding.decode(call.body))
    except InvalidSpan as error:
        raise GatewayError(400, str(error)) from None
    for where, event in translated:
        if problem := call.publisher.problem(event):
            raise GatewayError(400, f"{where}: {problem}")
    await call.publisher.publish([event for _, event in translated], call.caller)
    return encoding.response(ExportTraceServiceResponse())


def _render_error(request: web.Request, error: GatewayError) -> web.Response:
    """A `google.rpc.Status` in the request's encoding (JSON when it has none we speak)."""
    content_type = request.headers.get("Content-Type", "")
    try:
        encoding = _encoding(content_type)
    except GatewayError:
        encoding = _ENCODINGS[JSON]
    status = status_pb2.Status(
        code=_GRPC_CODES.get(error.status, code_pb2.UNKNOWN), message=error.message
    )
    return encoding.response(status, error.status)


ADAPTER = Adapter(
    name="otlp",
    routes=tuple(Route("POST", path, _export) for path in PATHS),
    render_error=_render_error,
)
