"""How a complete trace becomes Langfuse OTLP spans and score bodies (pure, no network)."""

from __future__ import annotations

import pytest
from documents import (
    FAILED,
    GENERATION,
    HELPFULNESS_SCORE_ID,
    OTHER_TRACE_ID,
    RESOLVED_SCORE_ID,
    RETRIEVER,
    ROOT,
    TOOL,
    TRACE_ID,
    reference_trace,
)
from standins.langfuse import ReceivedSpan, decode_export

from tracebus.schemas import Cost, TraceDocument, Usage
from tracebus.sinks.langfuse import (
    cost_details,
    langfuse_environment,
    score_body,
    score_uuid,
    to_otlp_request,
    usage_details,
)


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


# -- orphans and traces without a root -----------------------------------------------------

MISSING = "9999999999999999"


def test_an_orphan_keeps_its_missing_parent_and_says_it_is_an_orphan():
    document = reference_trace()
    orphan = document.observations[2].model_copy(
        update={"parent_observation_id": MISSING, "flags": ["orphan"]}
    )
    observations = [*document.observations[:2], orphan, *document.observations[3:]]

    span = spans_of(document.model_copy(update={"observations": observations}))[TOOL]

    assert span.parent_span_id == MISSING
    assert span.json("langfuse.observation.metadata")["tracebus"]["flags"] == ["orphan"]


def test_without_a_root_the_earliest_span_without_a_parent_carries_the_trace_io():
    document = reference_trace()
    # The root never came: its children are orphans, and two spans have no parent at all.
    observations = [
        o.model_copy(update={"parent_observation_id": None})
        if o.observation_id in (TOOL, RETRIEVER)
        else o
        for o in document.observations[1:]
    ]

    spans = spans_of(
        document.model_copy(update={"root_observation_id": None, "observations": observations})
    )

    assert list(spans) == [GENERATION, TOOL, RETRIEVER, FAILED]
    # GENERATION starts first, but names a parent: TOOL is the earliest without one.
    assert spans[TOOL].json("langfuse.trace.input") == {"question": "How do I rotate my API key?"}
    assert spans[TOOL].attributes["langfuse.trace.output"] == (
        "Open Settings → API keys and click Rotate."
    )
    for span_id in (GENERATION, RETRIEVER, FAILED):
        assert "langfuse.trace.input" not in spans[span_id].attributes


def test_without_a_root_or_a_parentless_span_the_earliest_orphan_carries_the_trace_io():
    document = reference_trace(root_observation_id=None)
    orphans = document.observations[1:]  # their parent, the root, never came

    spans = spans_of(document.model_copy(update={"observations": orphans}))

    assert {
        span_id for span_id, span in spans.items() if "langfuse.trace.input" in span.attributes
    } == {GENERATION}
    assert all(span.parent_span_id == ROOT for span in spans.values())


def test_a_part_whose_spans_all_have_their_parent_in_another_part_carries_no_trace_io():
    root, *children = reference_trace().observations
    ancestor = {"observation_id": ROOT, "start_time_unix_nano": root.start_time_unix_nano}
    part = reference_trace(
        root_observation_id=None,
        part=2,
        ancestors=[ancestor],
        observations=[child.model_dump() for child in children],
    )

    spans = spans_of(part)

    assert all("langfuse.trace.input" not in span.attributes for span in spans.values())


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


def test_a_numeric_score_keeps_its_trace_observation_and_environment():
    document = reference_trace()

    assert score_body(document, document.scores[0]) == {
        "id": str(score_uuid(TRACE_ID, HELPFULNESS_SCORE_ID)),
        "traceId": TRACE_ID,
        "observationId": GENERATION,
        "name": "helpfulness",
        "value": 0.9,
        "dataType": "NUMERIC",
        "source": "API",
        "comment": "clear and short",
        "metadata": {"tracebus": {"score_id": HELPFULNESS_SCORE_ID}},
        "environment": "production",
    }


def test_a_score_id_is_a_uuid_of_trace_and_score_id_so_no_two_traces_share_one():
    score_id = score_uuid(TRACE_ID, HELPFULNESS_SCORE_ID)

    assert score_id.version == 5
    assert score_uuid(TRACE_ID, HELPFULNESS_SCORE_ID) == score_id  # a resend updates it
    assert score_uuid(OTHER_TRACE_ID, HELPFULNESS_SCORE_ID) != score_id
    assert score_uuid(TRACE_ID, RESOLVED_SCORE_ID) != score_id


def test_a_boolean_score_is_sent_as_one_and_an_eval_source_is_kept_in_metadata():
    document = reference_trace()

    body = score_body(document, document.scores[1])

    assert body["value"] == 1
    assert body["dataType"] == "BOOLEAN"
    assert body["source"] == "API"
    assert body["metadata"] == {"tracebus": {"score_id": RESOLVED_SCORE_ID, "source": "EVAL"}}


def test_the_apps_own_score_metadata_is_kept_beside_the_tracebus_block():
    document = reference_trace()
    score = document.scores[0].model_copy(update={"metadata": {"rubric": "v2"}})

    assert score_body(document, score)["metadata"] == {
        "rubric": "v2",
        "tracebus": {"score_id": HELPFULNESS_SCORE_ID},
    }
