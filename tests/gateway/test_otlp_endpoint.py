"""The OTLP/HTTP endpoint as exporters see it: protobuf or JSON in, an ExportTraceServiceResponse
out once Kafka has the events, and every error a `google.rpc.Status` in the request's encoding.
A request is taken whole or not at all."""

from __future__ import annotations

import gzip
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import orjson
import pytest
from conftest import read_batches
from gateway_helpers import in_process_gateway, scenario
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from otlp_requests import CHILD_ID, ROOT_ID, TRACE_ID, export, otlp_json, span

from tracebus.config import KafkaSettings
from tracebus.gateway import otlp
from tracebus.kafka.broker import free_port
from tracebus.schemas import new_trace_id

KEY = "tb-otlp-secret"
PROTOBUF = {"Content-Type": "application/x-protobuf", "x-api-key": KEY}
JSON = {"Content-Type": "application/json", "x-api-key": KEY}
BASE64_TRACE_ID = "W46/95gDgQPSabYzgT/GDA=="  # protobuf's JSON mapping; OTLP/JSON wants hex


def running(settings: KafkaSettings, **overrides: Any) -> AbstractAsyncContextManager[Any]:
    return in_process_gateway(settings, [otlp.ADAPTER], [("shop", KEY)], **overrides)


def post_all(
    settings: KafkaSettings, requests: list[tuple[str, bytes, dict[str, str]]], **overrides: Any
) -> list[httpx.Response]:
    """POST each (path, body, headers) to a gateway of its own, in order."""
    responses = []

    async def run() -> None:
        async with running(settings, **overrides) as client:
            for path, body, headers in requests:
                responses.append(await client.post(path, content=body, headers=headers))

    scenario(run)
    return responses


def status_of(response: httpx.Response) -> status_pb2.Status:
    """The `google.rpc.Status` of an error response, decoded per its Content-Type."""
    status = status_pb2.Status()
    if response.headers["Content-Type"] == "application/x-protobuf":
        status.ParseFromString(response.content)
    else:
        body = response.json()
        status.code, status.message = body["code"], body["message"]
        assert set(body) == {"code", "message"}
    return status


def two_spans(trace_id: str = TRACE_ID) -> ExportTraceServiceRequest:
    return export(
        span("root", trace_id=trace_id, attributes={"user.id": "u-1"}),
        span("chat", trace_id=trace_id, span_id=CHILD_ID, parent=ROOT_ID),
    )


@pytest.mark.parametrize(
    ("path", "body", "headers", "answer"),
    [
        (
            "/v1/traces",
            two_spans().SerializeToString(),
            PROTOBUF,
            ExportTraceServiceResponse().SerializeToString(),
        ),
        (
            "/api/public/otel/v1/traces",
            gzip.compress(otlp_json(two_spans())),
            {**JSON, "Content-Encoding": "gzip"},
            b"{}",
        ),
    ],
    ids=["protobuf-otel-path", "gzip-json-langfuse-path"],
)
def test_an_export_is_answered_in_its_encoding_once_kafka_has_its_events(
    kafka: KafkaSettings, path: str, body: bytes, headers: dict[str, str], answer: bytes
) -> None:
    [response] = post_all(kafka, [(path, body, headers)])
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == headers["Content-Type"]
    assert response.content == answer
    [batch] = read_batches(kafka, lambda b: len(b) >= 1)
    assert batch.trace_id == TRACE_ID
    assert [(e.type, getattr(e, "name", None)) for e in batch.events] == [
        ("trace", "root"),
        ("observation", "root"),
        ("observation", "chat"),
    ]


def test_one_bad_span_refuses_the_whole_request_and_nothing_of_it_is_published(
    kafka: KafkaSettings,
) -> None:
    bad = export(
        span("fine", trace_id=new_trace_id()),
        span("broken", span_id=CHILD_ID, parent="00000000000000"),
    )
    good_trace = new_trace_id()
    rejected, accepted = post_all(
        kafka,
        [
            ("/v1/traces", bad.SerializeToString(), PROTOBUF),
            ("/v1/traces", two_spans(good_trace).SerializeToString(), PROTOBUF),
        ],
    )
    assert rejected.status_code == 400
    assert status_of(rejected) == status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message="span resourceSpans[0].scopeSpans[0].spans[1] ('broken'): parentSpanId is 7"
        " bytes; it must be 8",
    )
    assert accepted.status_code == 200
    batches = read_batches(kafka, lambda b: len(b) >= 1)
    assert [b.trace_id for b in batches] == [good_trace]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "message"),
    [
        (
            b"\xff\xff",
            PROTOBUF,
            400,
            code_pb2.INVALID_ARGUMENT,
            "body is not an OTLP ExportTraceServiceRequest in protobuf: Error parsing message"
            " with type 'opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest': Wire"
            " format was corrupt",
        ),
        (
            b'{"resourceSpans": [',
            {**JSON, "Content-Type": "application/json; charset=utf-8"},
            400,
            code_pb2.INVALID_ARGUMENT,
            "body is not valid JSON: unexpected end of data: line 1 column 20 (char 19)",
        ),
        (
            orjson.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": BASE64_TRACE_ID}]}]}]}
            ),
            JSON,
            400,
            code_pb2.INVALID_ARGUMENT,
            "span resourceSpans[0].scopeSpans[0].spans[0]: traceId 'W46/95gDgQPSabYzgT/GDA=='"
            " is not hex (OTLP/JSON ids are hex)",
        ),
        (
            b'{"resourceSpans": {"spans": 1}}',
            JSON,
            400,
            code_pb2.INVALID_ARGUMENT,
            "body is not an OTLP ExportTraceServiceRequest: Failed to parse resourceSpans field:"
            " repeated field resourceSpans must be in [] which is {'spans': 1} at"
            " ExportTraceServiceRequest.",
        ),
        (
            b"resourceSpans: []",
            {**JSON, "Content-Type": "text/plain"},
            415,
            code_pb2.INVALID_ARGUMENT,
            "unsupported Content-Type 'text/plain': send OTLP as application/x-protobuf or"
            " application/json",
        ),
        (
            b"",
            {"Content-Type": "application/x-protobuf"},
            401,
            code_pb2.UNAUTHENTICATED,
            "no API key: send it as HTTP Basic credentials, a bearer token or x-api-key",
        ),
    ],
    ids=["bad-protobuf", "bad-json", "base64-id", "wrong-shape", "content-type", "no-key"],
)
def test_errors_are_a_google_rpc_status_in_the_request_encoding(
    kafka: KafkaSettings,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: int,
    message: str,
) -> None:
    [response] = post_all(kafka, [("/v1/traces", body, headers)])
    assert response.status_code == status
    protobuf = headers["Content-Type"] == "application/x-protobuf"
    assert response.headers["Content-Type"] == (
        "application/x-protobuf" if protobuf else "application/json"
    )
    assert status_of(response) == status_pb2.Status(code=code, message=message)


def test_an_empty_export_is_accepted(kafka: KafkaSettings) -> None:
    responses = post_all(
        kafka,
        [("/v1/traces", b"", PROTOBUF), ("/v1/traces", b"{}", JSON), ("/v1/traces", b"", JSON)],
    )
    assert [(r.status_code, r.content) for r in responses] == [
        (200, b""),
        (200, b"{}"),
        (200, b"{}"),
    ]


def test_while_kafka_is_unreachable_an_export_gets_503_unavailable_with_retry_after(
    kafka: KafkaSettings,
) -> None:
    unreachable = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    [response] = post_all(
        unreachable,
        [("/v1/traces", two_spans().SerializeToString(), PROTOBUF)],
        ack_timeout_s=0.5,
        retry_after_s=7,
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert status_of(response) == status_pb2.Status(
        code=code_pb2.UNAVAILABLE,
        message="the gateway is not connected to Kafka yet; retry later",
    )


def test_a_retried_export_publishes_the_same_event_ids(kafka: KafkaSettings) -> None:
    body = two_spans().SerializeToString()
    post_all(kafka, [("/v1/traces", body, PROTOBUF), ("/v1/traces", otlp_json(two_spans()), JSON)])
    first, retried = read_batches(kafka, lambda b: len(b) >= 2)
    assert [e.event_id for e in first.events] == [e.event_id for e in retried.events]
    assert first.events == retried.events
