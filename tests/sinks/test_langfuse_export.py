"""LangfuseExporter against the strict Langfuse stand-in: what arrives, and how often."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator, Sequence

import httpx
import pytest
from documents import (
    FAILED,
    GENERATION,
    HELPFULNESS_SCORE_ID,
    OTHER_TRACE_ID,
    RESOLVED_SCORE_ID,
    ROOT,
    TOOL,
    TRACE_ID,
    reference_trace,
)
from standins.langfuse import LangfuseStandIn

from tracebus.schemas import TraceDocument
from tracebus.sinks.exporter import Exporter
from tracebus.sinks.langfuse import LangfuseExporter, score_uuid

# The ids Langfuse stores the reference trace's scores under.
HELPFULNESS = str(score_uuid(TRACE_ID, HELPFULNESS_SCORE_ID))
RESOLVED = str(score_uuid(TRACE_ID, RESOLVED_SCORE_ID))


@pytest.fixture
def langfuse() -> Iterator[LangfuseStandIn]:
    with LangfuseStandIn(public_key="pk-lf-test", secret_key="sk-lf-very-secret") as standin:
        yield standin


def export(langfuse: LangfuseStandIn, *batches: Sequence[TraceDocument]) -> None:
    """Export each batch in turn through one exporter, as the delivery runtime would."""

    async def run() -> None:
        exporter = LangfuseExporter(langfuse.url, langfuse.public_key, langfuse.secret_key)
        try:
            for documents in batches:
                await exporter.export(documents)
        finally:
            await exporter.close()

    asyncio.run(run())


def test_the_exporter_is_an_exporter_named_langfuse():
    exporter: Exporter = LangfuseExporter("http://127.0.0.1:1", "pk", "sk")

    assert exporter.name == "langfuse"


def test_a_trace_arrives_as_one_row_per_observation_with_every_field(langfuse):
    document = reference_trace()

    export(langfuse, [document])

    assert [span.span_id for span in langfuse.spans] == [
        o.observation_id for o in document.observations
    ]
    generation = langfuse.span(GENERATION)
    assert generation.trace_id == TRACE_ID
    assert generation.parent_span_id == ROOT
    assert generation.start_time_unix_nano == document.observations[1].start_time_unix_nano
    assert generation.end_time_unix_nano == document.observations[1].end_time_unix_nano
    assert generation.attributes["langfuse.observation.type"] == "generation"
    assert generation.attributes["langfuse.observation.model.name"] == "gpt-4o-2024-08-06"
    assert generation.json("langfuse.observation.usage_details") == {
        "input": 300,
        "input_cached_tokens": 512,
        "output": 48,
        "output_reasoning_tokens": 16,
        "total": 876,
    }
    assert generation.json("langfuse.observation.cost_details")["total"] == 0.00267
    assert generation.json("langfuse.observation.input") == [
        {"role": "user", "content": "How do I rotate my API key?"}
    ]
    assert generation.attributes["user.id"] == "user-42"
    assert generation.attributes["langfuse.environment"] == "production"
    assert langfuse.span(TOOL).attributes["langfuse.observation.type"] == "tool"
    assert langfuse.span(FAILED).status_code == 2
    assert langfuse.span(ROOT).json("langfuse.trace.input") == {
        "question": "How do I rotate my API key?"
    }


def test_scores_arrive_by_their_own_ids_after_the_spans(langfuse):
    export(langfuse, [reference_trace()])

    assert langfuse.scores == {
        HELPFULNESS: {
            "id": HELPFULNESS,
            "traceId": TRACE_ID,
            "observationId": GENERATION,
            "name": "helpfulness",
            "value": 0.9,
            "dataType": "NUMERIC",
            "source": "API",
            "comment": "clear and short",
            "metadata": {"tracebus": {"score_id": HELPFULNESS_SCORE_ID}},
            "environment": "production",
        },
        RESOLVED: {
            "id": RESOLVED,
            "traceId": TRACE_ID,
            "name": "resolved",
            "value": 1,
            "dataType": "BOOLEAN",
            "source": "API",
            "metadata": {"tracebus": {"score_id": RESOLVED_SCORE_ID, "source": "EVAL"}},
            "environment": "production",
        },
    }
    paths = [request.path for request in langfuse.requests]
    assert paths == ["/api/public/otel/v1/traces", "/api/public/scores", "/api/public/scores"]


def test_spans_go_as_gzip_protobuf_with_the_ingestion_version_and_basic_auth(langfuse):
    export(langfuse, [reference_trace()])

    spans_request = langfuse.requests[0]
    assert spans_request.status == 200
    assert spans_request.headers["content-type"] == "application/x-protobuf"
    assert spans_request.headers["content-encoding"] == "gzip"
    assert spans_request.headers["x-langfuse-ingestion-version"] == "4"
    assert spans_request.headers["x-langfuse-sdk-name"] == "tracebus"
    assert "authorization" not in spans_request.headers  # the stand-in keeps no credentials


def test_exporting_the_same_traces_again_replaces_rows_instead_of_adding_them(langfuse):
    document = reference_trace()

    export(langfuse, [document], [document])

    assert len(langfuse.spans) == len(document.observations)
    assert set(langfuse.receipts.values()) == {2}
    assert langfuse.score_receipts == {HELPFULNESS: 2, RESOLVED: 2}
    assert len(langfuse.scores) == 2


def test_two_traces_with_the_same_score_id_keep_a_score_each(langfuse):
    export(langfuse, [reference_trace(), reference_trace(trace_id=OTHER_TRACE_ID)])

    assert len(langfuse.scores) == 4
    by_trace = {
        (s["traceId"], s["metadata"]["tracebus"]["score_id"]) for s in langfuse.scores.values()
    }
    assert by_trace == {
        (trace_id, score_id)
        for trace_id in (TRACE_ID, OTHER_TRACE_ID)
        for score_id in (HELPFULNESS_SCORE_ID, RESOLVED_SCORE_ID)
    }


def test_a_later_revision_replaces_the_rows_of_the_earlier_one(langfuse):
    export(langfuse, [reference_trace(revision=1)], [reference_trace(revision=2)])

    assert len(langfuse.spans) == 5
    revisions = {
        span.json("langfuse.observation.metadata")["tracebus"]["revision"]
        for span in langfuse.spans
    }
    assert revisions == {2}


def test_traces_of_one_batch_share_one_request(langfuse):
    other = reference_trace(trace_id=OTHER_TRACE_ID, scores=[])

    export(langfuse, [reference_trace(scores=[]), other])

    assert len(langfuse.requests) == 1
    assert {span.trace_id for span in langfuse.spans} == {TRACE_ID, other.trace_id}


def test_a_batch_without_observations_or_scores_sends_nothing(langfuse):
    export(langfuse, [], [reference_trace(observations=[], scores=[])])

    assert langfuse.requests == []


def test_a_given_client_is_used_and_left_open(langfuse):
    async def run() -> bool:
        async with httpx.AsyncClient() as client:
            exporter = LangfuseExporter(
                langfuse.url, langfuse.public_key, langfuse.secret_key, client=client
            )
            await exporter.export([reference_trace(scores=[])])
            await exporter.close()
            return client.is_closed

    assert asyncio.run(run()) is False
    assert len(langfuse.spans) == 5


def test_the_secret_key_appears_nowhere_in_the_exporter():
    exporter = LangfuseExporter("https://cloud.langfuse.com/", "pk-lf-1", "sk-lf-very-secret")
    encoded = base64.b64encode(b"pk-lf-1:sk-lf-very-secret").decode()

    for text in (repr(exporter), str(exporter)):
        assert "sk-lf-very-secret" not in text
        assert encoded not in text
    assert repr(exporter) == "LangfuseExporter(base_url='https://cloud.langfuse.com')"
