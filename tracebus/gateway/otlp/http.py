"""The OTLP/HTTP routes: `POST /v1/traces` for OpenTelemetry exporters, and Langfuse's
`POST /api/public/otel/v1/traces`, so a Langfuse SDK pointed at the gateway works unchanged.

A request is accepted whole or not at all: one span that cannot become a valid event rejects it
with 400 naming the span, and nothing of it is published. Answers and errors (a
`google.rpc.Status`) come in the request's own encoding, as the OTLP/HTTP specification asks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tracebus.gateway.otlp.decoding import decode_json, decode_protobuf
from tracebus.gateway.otlp.spans import InvalidSpan, translate
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


def _to_json(message: Message) -> bytes:
    return orjson.dumps(json_format.MessageToDict(message))


_ENCODINGS = {
    PROTOBUF: _Encoding(PROTOBUF, decode_protobuf, lambda m: m.SerializeToString()),
    JSON: _Encoding(JSON, decode_json, _to_json),
}


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
