"""The Langfuse stand-in is as strict as the tests relying on it assume."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from documents import TRACE_ID, reference_trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from standins.langfuse import LangfuseStandIn

from tracebus.sinks.langfuse import to_otlp_request

AUTH = ("pk-lf-test", "sk-lf-test")
OTLP_HEADERS = {
    "content-type": "application/x-protobuf",
    "x-langfuse-ingestion-version": "4",
}


@pytest.fixture
def langfuse() -> Iterator[LangfuseStandIn]:
    with LangfuseStandIn(*AUTH) as standin:
        yield standin


def valid_request() -> ExportTraceServiceRequest:
    return to_otlp_request([reference_trace()])


def post_spans(
    langfuse: LangfuseStandIn,
    request: ExportTraceServiceRequest | bytes,
    *,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] = AUTH,
) -> httpx.Response:
    body = request if isinstance(request, bytes) else request.SerializeToString()
    return httpx.post(
        f"{langfuse.url}/api/public/otel/v1/traces",
        content=body,
        headers={**OTLP_HEADERS, **(headers or {})},
        auth=auth,
    )


def post_score(langfuse: LangfuseStandIn, score: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{langfuse.url}/api/public/scores", json=score, auth=AUTH)


def set_attribute(
    request: ExportTraceServiceRequest, span_index: int, key: str, value: str
) -> None:
    span = request.resource_spans[0].scope_spans[0].spans[span_index]
    for pair in span.attributes:
        if pair.key == key:
            pair.value.string_value = value
            return
    span.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))


def test_a_valid_export_is_stored_and_answered_with_an_empty_object(langfuse):
    response = post_spans(langfuse, valid_request())

    assert (response.status_code, response.json()) == (200, {})
    assert len(langfuse.spans) == 5


def test_uncompressed_and_gzip_bodies_are_both_accepted(langfuse):
    compressed = gzip.compress(valid_request().SerializeToString())

    assert post_spans(langfuse, valid_request()).status_code == 200
    assert post_spans(langfuse, compressed, headers={"content-encoding": "gzip"}).status_code == 200


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("langfuse.observation.type", "GENERATION"),
        ("langfuse.observation.metadata", "[1, 2]"),
        ("langfuse.observation.usage_details", '{"input": 1.5}'),
        ("langfuse.observation.usage_details", '{"input": -1}'),
        ("langfuse.observation.cost_details", '{"total": "0.1"}'),
        ("langfuse.observation.model.parameters", '{"stream": true}'),
        ("langfuse.environment", "langfuse-prod"),
        ("langfuse.observation.level", "INFO"),
        ("langfuse.observation.completion_start_time", "yesterday"),
    ],
)
def test_one_bad_span_rejects_the_whole_export(langfuse, key, value):
    request = valid_request()
    set_attribute(request, 3, key, value)

    response = post_spans(langfuse, request)

    assert response.status_code == 400
    assert key.split(".")[-1] in str(response.json()["errors"])
    assert langfuse.spans == []


def test_bad_ids_and_times_reject_the_whole_export(langfuse):
    request = valid_request()
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = bytes(16)
    spans[2].span_id = b"\x01\x02"
    spans[3].end_time_unix_nano = spans[3].start_time_unix_nano - 1

    response = post_spans(langfuse, request)

    assert response.status_code == 400
    assert len(response.json()["errors"]) == 3
    assert langfuse.spans == []


@pytest.mark.parametrize(
    ("headers", "auth", "status"),
    [
        ({}, ("pk-lf-test", "sk-lf-wrong"), 401),
        ({"x-langfuse-ingestion-version": ""}, AUTH, 400),
        ({"x-langfuse-ingestion-version": "5"}, AUTH, 400),
        ({"content-type": "application/json"}, AUTH, 400),
        ({"content-encoding": "gzip"}, AUTH, 400),  # says gzip, is not
        ({"content-encoding": "deflate"}, AUTH, 400),
    ],
)
def test_requests_the_server_would_refuse_are_refused(langfuse, headers, auth, status):
    response = post_spans(langfuse, valid_request(), headers=headers, auth=auth)

    assert response.status_code == status
    assert langfuse.spans == []


def test_a_body_that_inflates_beyond_the_limit_is_too_large(langfuse):
    langfuse.max_body_bytes = 10_000
    bomb = gzip.compress(bytes(1_000_000))

    response = post_spans(langfuse, bomb, headers={"content-encoding": "gzip"})

    assert response.status_code == 413


def test_other_methods_and_paths_are_refused(langfuse):
    assert httpx.get(f"{langfuse.url}/api/public/otel/v1/traces", auth=AUTH).status_code == 405
    assert httpx.post(f"{langfuse.url}/api/public/ingestion", json={}, auth=AUTH).status_code == 404


def test_injected_faults_apply_to_the_next_requests_in_order(langfuse):
    langfuse.fail_next(503, count=2)
    langfuse.fail_next(429, retry_after=3)

    statuses = [post_spans(langfuse, valid_request()).status_code for _ in range(4)]

    assert statuses == [503, 503, 429, 200]
    assert langfuse.requests[2].status == 429


def test_a_fault_for_scores_leaves_spans_alone(langfuse):
    langfuse.fail_next(500, endpoint="scores")

    assert post_spans(langfuse, valid_request()).status_code == 200
    assert post_score(langfuse, score()).status_code == 500
    assert post_score(langfuse, score()).status_code == 200


def score(**changes: Any) -> dict[str, Any]:
    return {
        "id": "s-1",
        "traceId": TRACE_ID,
        "name": "helpfulness",
        "value": 0.5,
        "dataType": "NUMERIC",
        **changes,
    }


def test_a_score_is_stored_by_id_and_a_resend_replaces_it(langfuse):
    first = post_score(langfuse, score())
    post_score(langfuse, score(value=0.75))

    assert (first.status_code, first.json()) == (200, {"id": "s-1"})
    assert langfuse.scores == {"s-1": score(value=0.75)}
    assert langfuse.score_receipts == {"s-1": 2}


@pytest.mark.parametrize(
    "changes",
    [
        {"dataType": "BOOLEAN", "value": True},
        {"dataType": "BOOLEAN", "value": 2},
        {"dataType": "NUMERIC", "value": "0.5"},
        {"dataType": "CATEGORICAL", "value": 1},
        {"dataType": "TEXT", "value": ""},
        {"dataType": "STARS"},
        {"name": ""},
        {"traceId": None},
        {"source": "EVAL"},
        {"source": "ANNOTATION"},
        {"environment": "Prod"},
        {"trace_id": TRACE_ID},
    ],
)
def test_scores_the_api_would_refuse_or_drop_are_refused(langfuse, changes):
    response = post_score(langfuse, score(**changes))

    assert response.status_code == 400
    assert langfuse.scores == {}


def test_a_list_of_scores_is_refused_like_the_single_object_api_does(langfuse):
    response = httpx.post(f"{langfuse.url}/api/public/scores", json=[score()], auth=AUTH)

    assert response.status_code == 400
