"""How a complete trace becomes Langfuse OTLP spans and score bodies (pure, no network)."""

from __future__ import annotations

from typing import Any

import pytest
from standins.langfuse import ReceivedSpan, decode_export

from tracebus.schemas import Cost, TraceDocument, Usage
from tracebus.sinks.langfuse import (
    cost_details,
    langfuse_environment,
    score_body,
    to_otlp_request,
    usage_details,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT = "00f067aa0ba902b7"
GENERATION = "1a2b3c4d5e6f7081"
TOOL = "2b3c4d5e6f708192"
RETRIEVER = "3c4d5e6f708192a3"
FAILED = "4d5e6f708192a3b4"
T0 = 1_746_100_800_123_456_789  # 2025-05-01T12:00:00.123456789Z, nanoseconds on purpose
MS = 1_000_000


def observation(observation_id: str, kind: str, name: str, start_ms: int, end_ms: int, **fields):
    return {
        "observation_id": observation_id,
        "parent_observation_id": ROOT if observation_id != ROOT else None,
        "kind": kind,
        "name": name,
        "start_time_unix_nano": T0 + start_ms * MS,
        "end_time_unix_nano": T0 + end_ms * MS,
        "duration_ms": float(end_ms - start_ms),
        **fields,
    }


def reference_trace(**changes: Any) -> TraceDocument:
    """A support-chat trace with one of each interesting observation, and two scores."""
    document = {
        "schema_version": 1,
        "trace_id": TRACE_ID,
        "revision": 2,
        "completed_by": "root_ended",
        "published_at_unix_nano": T0 + 5_000 * MS,
        "trace": {
            "name": "support-chat",
            "user_id": "user-42",
            "session_id": "session-7",
            "tags": ["beta", "support"],
            "metadata": {"tenant": "acme"},
            "release": "2025.05.1",
            "environment": "Production",
            "input": {"question": "How do I rotate my API key?"},
            "output": "Open Settings → API keys and click Rotate.",
        },
        "root_observation_id": ROOT,
        "observations": [
            observation(ROOT, "agent", "answer-question", 0, 2_500, metadata={"route": "faq"}),
            observation(
                GENERATION,
                "generation",
                "chat",
                100,
                1_900,
                model="gpt-4o-2024-08-06",
                provider="openai",
                model_parameters={"temperature": 0.2, "max_tokens": 512, "stream": True},
                input=[{"role": "user", "content": "How do I rotate my API key?"}],
                output={"role": "assistant", "content": "Open Settings → API keys."},
                usage={
                    "input_tokens": 812,
                    "input_cache_read_tokens": 512,
                    "output_tokens": 64,
                    "output_reasoning_tokens": 16,
                    "total_tokens": 876,
                },
                cost={
                    "input": 0.00203,
                    "input_cache_read": 0.00064,
                    "output": 0.00064,
                    "output_reasoning": 0.00016,
                    "total": 0.00267,
                },
                cost_source="reported",
                completion_start_time_unix_nano=T0 + 450 * MS,
                time_to_first_token_ms=350.0,
            ),
            observation(
                TOOL,
                "tool",
                "search_docs",
                1_950,
                2_100,
                input={"query": "rotate api key"},
                output=["docs/keys.md"],
            ),
            observation(
                RETRIEVER,
                "retriever",
                "vector-lookup",
                2_100,
                2_300,
                input="rotate api key",
                output=[{"id": "doc-1", "score": 0.91}],
            ),
            observation(
                FAILED,
                "span",
                "rerank",
                2_300,
                2_400,
                level="ERROR",
                status_message="reranker timed out after 100 ms",
            ),
        ],
        "scores": [
            {
                "schema_version": 1,
                "type": "score",
                "event_id": "ev-score-1",
                "trace_id": TRACE_ID,
                "timestamp_unix_nano": T0 + 4_000 * MS,
                "score_id": "helpfulness-4bf92f35",
                "observation_id": GENERATION,
                "name": "helpfulness",
                "value": 0.9,
                "data_type": "NUMERIC",
                "comment": "clear and short",
            },
            {
                "schema_version": 1,
                "type": "score",
                "event_id": "ev-score-2",
                "trace_id": TRACE_ID,
                "timestamp_unix_nano": T0 + 4_100 * MS,
                "score_id": "resolved-4bf92f35",
                "name": "resolved",
                "value": True,
                "data_type": "BOOLEAN",
                "source": "EVAL",
            },
        ],
        "summary": {
            "start_time_unix_nano": T0,
            "end_time_unix_nano": T0 + 2_500 * MS,
            "duration_ms": 2_500.0,
            "observation_count": 5,
        },
    }
    return TraceDocument.model_validate({**document, **changes})


def spans_of(*documents: TraceDocument) -> dict[str, ReceivedSpan]:
    """The spans of the export request, by span id; fails on anything Langfuse would refuse."""
    spans, problems = decode_export(to_otlp_request(documents))
    assert problems == []
    return {span.span_id: span for span in spans}


# -- spans ---------------------------------------------------------------------------------


def test_each_observation_becomes_one_span_with_its_exact_ids_and_times():
    document = reference_trace()

    spans = spans_of(document)

    assert list(spans) == [o.observation_id for o in document.observations]
    for expected in document.observations:
        span = spans[expected.observation_id]
        assert span.trace_id == TRACE_ID
        assert span.parent_span_id == expected.parent_observation_id
        assert span.name == expected.name
        assert span.start_time_unix_nano == expected.start_time_unix_nano
        assert span.end_time_unix_nano == expected.end_time_unix_nano


def test_observation_kind_becomes_the_lowercase_langfuse_type():
    spans = spans_of(reference_trace())

    types = {
        span_id: span.attributes["langfuse.observation.type"] for span_id, span in spans.items()
    }
    assert types == {
        ROOT: "agent",
        GENERATION: "generation",
        TOOL: "tool",
        RETRIEVER: "retriever",
        FAILED: "span",
    }


def test_trace_attributes_are_on_every_span():
    for span in spans_of(reference_trace()).values():
        assert span.attributes["langfuse.trace.name"] == "support-chat"
        assert span.attributes["user.id"] == "user-42"
        assert span.attributes["session.id"] == "session-7"
        assert span.attributes["langfuse.trace.tags"] == ["beta", "support"]
        assert span.json("langfuse.trace.metadata") == {"tenant": "acme"}
        assert span.attributes["langfuse.environment"] == "production"
        assert span.attributes["langfuse.release"] == "2025.05.1"


def test_only_the_root_span_carries_trace_input_and_output():
    spans = spans_of(reference_trace())

    root = spans.pop(ROOT)
    assert root.json("langfuse.trace.input") == {"question": "How do I rotate my API key?"}
    assert root.attributes["langfuse.trace.output"] == "Open Settings → API keys and click Rotate."
    for span in spans.values():
        assert "langfuse.trace.input" not in span.attributes
        assert "langfuse.trace.output" not in span.attributes


def test_generation_carries_model_parameters_usage_cost_and_first_token_time():
    generation = spans_of(reference_trace())[GENERATION]

    assert generation.attributes["langfuse.observation.model.name"] == "gpt-4o-2024-08-06"
    assert generation.json("langfuse.observation.model.parameters") == {
        "temperature": 0.2,
        "max_tokens": 512,
        "stream": "true",
    }
    assert generation.json("langfuse.observation.usage_details") == {
        "input": 300,
        "input_cached_tokens": 512,
        "output": 48,
        "output_reasoning_tokens": 16,
        "total": 876,
    }
    assert generation.json("langfuse.observation.cost_details") == {
        "input": 0.00139,
        "input_cached_tokens": 0.00064,
        "output": 0.00048,
        "output_reasoning_tokens": 0.00016,
        "total": 0.00267,
    }
    assert (
        generation.attributes["langfuse.observation.completion_start_time"]
        == "2025-05-01T12:00:00.573456Z"
    )


def test_input_and_output_are_json_text_and_strings_stay_as_they_are():
    spans = spans_of(reference_trace())

    assert spans[TOOL].json("langfuse.observation.input") == {"query": "rotate api key"}
    assert spans[TOOL].json("langfuse.observation.output") == ["docs/keys.md"]
    assert spans[RETRIEVER].attributes["langfuse.observation.input"] == "rotate api key"
    assert "langfuse.observation.input" not in spans[FAILED].attributes


def test_error_observation_has_error_status_level_and_message():
    spans = spans_of(reference_trace())

    failed = spans[FAILED]
    assert failed.status_code == 2
    assert failed.status_message == "reranker timed out after 100 ms"
    assert failed.attributes["langfuse.observation.level"] == "ERROR"
    assert failed.attributes["langfuse.observation.status_message"] == (
        "reranker timed out after 100 ms"
    )
    assert spans[TOOL].status_code == 0
    assert spans[TOOL].attributes["langfuse.observation.level"] == "DEFAULT"


def test_observation_metadata_is_one_json_object_with_the_tracebus_revision():
    spans = spans_of(reference_trace())

    assert spans[ROOT].json("langfuse.observation.metadata") == {
        "route": "faq",
        "tracebus": {"revision": 2, "completed_by": "root_ended"},
    }
    assert spans[GENERATION].json("langfuse.observation.metadata") == {
        "tracebus": {
            "revision": 2,
            "completed_by": "root_ended",
            "provider": "openai",
            "cost_source": "reported",
        }
    }


def test_a_trace_published_in_parts_says_which_part_each_span_came_in():
    spans = spans_of(reference_trace(part=2, parts=3))

    block = spans[TOOL].json("langfuse.observation.metadata")["tracebus"]
    assert (block["part"], block["parts"]) == (2, 3)


def test_a_later_revision_keeps_ids_and_start_times_so_it_replaces_the_earlier_one():
    first = spans_of(reference_trace(revision=1))
    second = spans_of(reference_trace(revision=2))

    assert {span.key for span in first.values()} == {span.key for span in second.values()}
    assert second[ROOT].json("langfuse.observation.metadata")["tracebus"]["revision"] == 2


def test_resource_and_scope_name_tracebus_not_the_langfuse_sdk():
    span = spans_of(reference_trace())[ROOT]

    assert span.resource_attributes["service.name"] == "tracebus"
    assert span.resource_attributes["service.version"]
    assert span.scope_name == "tracebus"
    assert span.scope_version


def test_all_documents_go_into_one_request():
    other_trace = "5cf92f3577b34da6a3ce929d0e0e4737"
    request = to_otlp_request([reference_trace(), reference_trace(trace_id=other_trace)])

    assert len(request.resource_spans) == 1
    assert len(request.resource_spans[0].scope_spans) == 1
    assert len(request.resource_spans[0].scope_spans[0].spans) == 10


def test_no_observations_make_an_empty_request():
    assert not to_otlp_request([]).resource_spans
    assert not to_otlp_request([reference_trace(observations=[])]).resource_spans


def test_optional_trace_attributes_are_left_out_when_absent():
    span = spans_of(reference_trace(trace={}))[ROOT]

    for attribute in (
        "langfuse.trace.name",
        "user.id",
        "session.id",
        "langfuse.trace.tags",
        "langfuse.trace.metadata",
        "langfuse.environment",
        "langfuse.release",
        "langfuse.trace.input",
        "langfuse.trace.output",
    ):
        assert attribute not in span.attributes


# -- buckets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inclusive", "exclusive"),
    [
        (
            {"input_tokens": 812, "input_cache_read_tokens": 512, "output_tokens": 64},
            {"input": 300, "input_cached_tokens": 512, "output": 64, "total": 876},
        ),
        (
            {
                "input_tokens": 1_000,
                "input_cache_read_tokens": 200,
                "input_cache_creation_tokens": 300,
                "input_audio_tokens": 100,
                "output_tokens": 500,
                "output_reasoning_tokens": 120,
                "output_audio_tokens": 80,
                "total_tokens": 1_500,
            },
            {
                "input": 400,
                "input_cached_tokens": 200,
                "input_cache_creation": 300,
                "input_audio_tokens": 100,
                "output": 300,
                "output_reasoning_tokens": 120,
                "output_audio_tokens": 80,
                "total": 1_500,
            },
        ),
        ({"output_tokens": 10}, {"output": 10, "total": 10}),
        (
            {"input_tokens": 5, "input_cache_read_tokens": 9},  # inconsistent: clamped, not < 0
            {"input": 0, "input_cached_tokens": 9, "total": 5},
        ),
        (
            {"input_tokens": 7, "other": {"web_search_requests": 2, "input": 99}},
            {"input": 7, "total": 7, "web_search_requests": 2},
        ),
        (
            {"input_cache_read_tokens": 40, "output_tokens": 2},  # no input total: parts count
            {"input_cached_tokens": 40, "output": 2, "total": 42},
        ),
        ({"other": {"images": 3}}, {"images": 3}),  # counted in no total
        ({}, {}),
    ],
)
def test_usage_buckets_become_langfuse_exclusive_buckets(inclusive, exclusive):
    assert usage_details(Usage.model_validate(inclusive)) == exclusive


@pytest.mark.parametrize(
    ("inclusive", "exclusive"),
    [
        (
            {"input": 0.003, "input_cache_read": 0.001, "output": 0.002},
            {"input": 0.002, "input_cached_tokens": 0.001, "output": 0.002, "total": 0.005},
        ),
        ({"total": 0.5}, {"total": 0.5}),
        ({"input_cache_read": 0.25}, {"input_cached_tokens": 0.25, "total": 0.25}),
        (
            {"input": 0.1, "output": 0.2, "other": {"web_search": 0.01}},
            {"input": 0.1, "output": 0.2, "web_search": 0.01, "total": 0.3},
        ),
        ({}, {}),
    ],
)
def test_cost_buckets_become_exclusive_and_always_carry_a_total(inclusive, exclusive):
    assert cost_details(Cost.model_validate(inclusive)) == exclusive


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("production", "production"),
        ("Staging", "staging"),
        ("langfuse-eval", "-eval"),
        ("langfuselangfuse_x", "_x"),
        ("langfuse", "default"),
        ("prod eu", "default"),
        ("x" * 50, "x" * 40),
        (None, None),
    ],
)
def test_environment_is_normalised_like_langfuse_does(name, stored):
    assert langfuse_environment(name) == stored


def test_model_parameters_keep_strings_and_numbers_and_drop_nulls():
    document = reference_trace()
    generation = document.observations[1].model_copy(
        update={"model_parameters": {"seed": 7, "stop": None, "tool_choice": "auto", "n": False}}
    )
    span = spans_of(document.model_copy(update={"observations": [generation]}))[GENERATION]

    assert span.json("langfuse.observation.model.parameters") == {
        "seed": 7,
        "tool_choice": "auto",
        "n": "false",
    }


# -- scores --------------------------------------------------------------------------------


def test_a_numeric_score_keeps_its_id_trace_observation_and_environment():
    document = reference_trace()

    assert score_body(document, document.scores[0]) == {
        "id": "helpfulness-4bf92f35",
        "traceId": TRACE_ID,
        "observationId": GENERATION,
        "name": "helpfulness",
        "value": 0.9,
        "dataType": "NUMERIC",
        "source": "API",
        "comment": "clear and short",
        "environment": "production",
    }


def test_a_boolean_score_is_sent_as_one_and_an_eval_source_is_kept_in_metadata():
    document = reference_trace()

    body = score_body(document, document.scores[1])

    assert body["value"] == 1
    assert body["dataType"] == "BOOLEAN"
    assert body["source"] == "API"
    assert body["metadata"] == {"tracebus": {"source": "EVAL"}}
