"""How OTLP spans become tracebus events: every span one complete observation, trace-level
attributes one trace event per trace, read with Langfuse's precedence so an app gets the same
traces through tracebus as from Langfuse itself."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from langfuse import Langfuse, propagate_attributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_requests import CHILD_ID, ROOT_ID, SECOND, START, TRACE_ID, export, otlp_json, span

from tracebus.gateway.otlp.decoding import decode_json, decode_protobuf
from tracebus.gateway.otlp.spans import InvalidSpan, translate
from tracebus.schemas import validate_event

CHAT_ID = "1111111111111111"


def events(*spans: Any, **export_options: Any) -> list[dict[str, Any]]:
    translated = [t.event for t in translate(export(*spans, **export_options))]
    for event in translated:
        validate_event(event)
    return translated


def observation(translated: list[dict[str, Any]], observation_id: str) -> dict[str, Any]:
    [found] = [e for e in translated if e.get("observation_id") == observation_id]
    return found


def trace_event(translated: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = [e for e in translated if e["type"] == "trace"]
    return found


def test_a_genai_chat_span_becomes_a_complete_generation() -> None:
    chat = span(
        "chat gpt-4o",
        span_id=CHAT_ID,
        parent=ROOT_ID,
        start=START + SECOND // 10,
        end=START + SECOND // 2,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.max_tokens": 200,
            "gen_ai.request.stop_sequences": ["\n\n"],
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 400,
            "gen_ai.system_instructions": '[{"type":"text","content":"Be brief."}]',
            "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"Hi"}]}]',
            "gen_ai.output.messages": '[{"role":"assistant","parts":[{"content":"Hello"}]}]',
            "server.address": "api.openai.com",
        },
    )
    generation = observation(events(chat), CHAT_ID)
    assert generation == {
        "schema_version": 1,
        "type": "observation",
        "event_id": generation["event_id"],
        "trace_id": TRACE_ID,
        "timestamp_unix_nano": START + SECOND // 2,
        "observation_id": CHAT_ID,
        "parent_observation_id": ROOT_ID,
        "kind": "generation",
        "name": "chat gpt-4o",
        "start_time_unix_nano": START + SECOND // 10,
        "end_time_unix_nano": START + SECOND // 2,
        "level": "DEFAULT",
        "model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "model_parameters": {"temperature": 0.2, "max_tokens": 200, "stop_sequences": '["\\n\\n"]'},
        "usage": {
            "input_tokens": 1000,
            "input_cache_read_tokens": 400,
            "output_tokens": 50,
            "total_tokens": 1050,
        },
        "input": [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Hi"}]},
        ],
        "output": [{"role": "assistant", "parts": [{"content": "Hello"}]}],
        "metadata": {
            "attributes": {"server.address": "api.openai.com"},
            "resourceAttributes": {"service.name": "shop"},
            "scope": {"name": "my-app", "version": "1.0.0"},
        },
    }


def test_a_failed_span_is_an_error_with_its_status_message() -> None:
    [failed] = events(span("lookup", parent=CHILD_ID, error="timeout after 30s"))
    assert failed["level"] == "ERROR"
    assert failed["status_message"] == "timeout after 30s"


LANGFUSE_GENERATION = {
    "langfuse.observation.type": "generation",
    "langfuse.observation.model.name": "claude-sonnet-4",
    "langfuse.observation.model.parameters": '{"temperature": 0, "stream": true, "tools": ["a"]}',
    "langfuse.observation.input": '{"messages": [{"role": "user", "content": "Hi"}]}',
    "langfuse.observation.output": "Hello!",
    "langfuse.observation.level": "warn",
    "langfuse.observation.status_message": "slow",
    "langfuse.observation.completion_start_time": '"2026-09-21T10:00:00.250123Z"',
    "langfuse.observation.metadata": '{"a": 1}',
    "langfuse.observation.metadata.b": "two",
    # Exclusive buckets: input excludes the cache parts listed beside it.
    "langfuse.observation.usage_details": orjson.dumps(
        {
            "input": 100,
            "input_cached_tokens": 800,
            "input_cache_creation": 50,
            "input_cache_creation_5m": 30,
            "output": 40,
            "output_reasoning_tokens": 10,
            "web_searches": 2,
        }
    ).decode(),
    "langfuse.observation.cost_details": '{"input": 0.0003, "input_cached_tokens": 0.00024,'
    ' "output": 0.0006, "output_reasoning_tokens": 0.00015, "total": 0.00129}',
}


def test_langfuse_attributes_are_read_as_langfuse_reads_them() -> None:
    generation = observation(
        events(span("llm", parent=CHILD_ID, attributes=LANGFUSE_GENERATION)), ROOT_ID
    )
    assert generation["kind"] == "generation"
    assert generation["model"] == "claude-sonnet-4"
    assert generation["model_parameters"] == {"temperature": 0, "stream": True, "tools": '["a"]'}
    assert generation["input"] == {"messages": [{"role": "user", "content": "Hi"}]}
    assert generation["output"] == "Hello!"
    assert (generation["level"], generation["status_message"]) == ("WARNING", "slow")
    assert generation["completion_start_time_unix_nano"] == 1_789_984_800_250_123_000
    assert generation["metadata"] == {
        "a": 1,
        "b": "two",
        "resourceAttributes": {"service.name": "shop"},
        "scope": {"name": "my-app", "version": "1.0.0"},
    }


def test_langfuse_exclusive_usage_and_cost_become_inclusive_buckets() -> None:
    generation = observation(events(span("llm", attributes=LANGFUSE_GENERATION)), ROOT_ID)
    assert generation["usage"] == {
        "input_tokens": 980,
        "input_cache_read_tokens": 800,
        "input_cache_creation_tokens": 80,
        "output_tokens": 50,
        "output_reasoning_tokens": 10,
        "total_tokens": 1030,
        "other": {"web_searches": 2},
    }
    assert generation["cost"] == {
        "input": 0.00054,
        "input_cache_read": 0.00024,
        "output": 0.00075,
        "output_reasoning": 0.00015,
        "total": 0.00129,
    }


@pytest.mark.parametrize(
    ("usage_details", "usage"),
    [
        (
            {"input": 10, "output": 5, "total": 15},
            {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        ),
        (
            {"input_audio_tokens": 7, "output": 3, "output_audio_tokens": 4},
            {
                "input_tokens": 7,
                "input_audio_tokens": 7,
                "output_tokens": 7,
                "output_audio_tokens": 4,
                "total_tokens": 14,
            },
        ),
        (
            # An OpenAI usage object, which Langfuse converts to exclusive keys.
            {
                "prompt_tokens": 90,
                "completion_tokens": 9,
                "total_tokens": 99,
                "prompt_tokens_details": {"cached_tokens": 80},
            },
            {
                "input_tokens": 90,
                "input_cache_read_tokens": 80,
                "output_tokens": 9,
                "total_tokens": 99,
            },
        ),
        (
            # Langfuse's OpenAI schema requires `total_tokens`; without it the keys are raw.
            {"prompt_tokens": 90, "completion_tokens": 9, "prompt_tokens_details": {"x": 1}},
            {"other": {"prompt_tokens": 90, "completion_tokens": 9}},
        ),
        ({"input": 1.5, "output": -2, "total": "3"}, {"total_tokens": 3}),
    ],
    ids=["plain", "audio", "provider-shape", "incomplete-provider-shape", "invalid-counts-dropped"],
)
def test_usage_details_of_every_shape(usage_details: dict[str, Any], usage: dict[str, Any]) -> None:
    attributes = {"langfuse.observation.usage_details": orjson.dumps(usage_details).decode()}
    assert observation(events(span(attributes=attributes)), ROOT_ID)["usage"] == usage


@pytest.mark.parametrize(
    ("attributes", "usage"),
    [
        (
            {
                "llm.token_count.prompt": 120,
                "llm.token_count.completion": 30,
                "llm.token_count.total": 150,
                "llm.token_count.prompt_details.cache_read": 100,
                "llm.token_count.completion_details.reasoning": 20,
            },
            {
                "input_tokens": 120,
                "input_cache_read_tokens": 100,
                "output_tokens": 30,
                "output_reasoning_tokens": 20,
                "total_tokens": 150,
            },
        ),
        (
            {
                "gen_ai.usage.prompt_tokens": 12,
                "gen_ai.usage.completion_tokens": 3,
                "gen_ai.usage.cache_creation_input_tokens": 5,
                "gen_ai.usage.details.tool_calls": 1,
            },
            {
                "input_tokens": 12,
                "input_cache_creation_tokens": 5,
                "output_tokens": 3,
                "total_tokens": 15,
                "other": {"tool_calls": 1},
            },
        ),
    ],
    ids=["openinference", "gen_ai-legacy-names"],
)
def test_token_counts_of_other_conventions_are_inclusive_already(
    attributes: dict[str, Any], usage: dict[str, Any]
) -> None:
    assert observation(events(span(attributes=attributes)), ROOT_ID)["usage"] == usage


def test_a_reported_total_cost_is_kept() -> None:
    attributes = {"gen_ai.request.model": "m", "gen_ai.usage.cost": 0.0125}
    assert observation(events(span(attributes=attributes)), ROOT_ID)["cost"] == {"total": 0.0125}


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"langfuse.observation.type": "retriever", "openinference.span.kind": "LLM"}, "retriever"),
        ({"langfuse.observation.type": "GENERATION", "openinference.span.kind": "TOOL"}, "tool"),
        ({"openinference.span.kind": "LLM", "gen_ai.operation.name": "embeddings"}, "generation"),
        (
            {"openinference.span.kind": "RERANKER", "gen_ai.operation.name": "embeddings"},
            "embedding",
        ),
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m"}, "agent"),
        ({"gen_ai.operation.name": "execute_tool"}, "tool"),
        ({"gen_ai.tool.call.id": "call_1", "gen_ai.request.model": "m"}, "tool"),
        ({"llm.model_name": "m"}, "generation"),
        ({"model": ""}, "span"),
        ({}, "span"),
    ],
    ids=[
        "langfuse-type-first",
        "langfuse-type-is-case-sensitive",
        "openinference-before-gen_ai",
        "unknown-openinference-kind-falls-through",
        "gen_ai-operation",
        "execute-tool",
        "tool-call-attributes",
        "model-means-generation",
        "empty-model-ignored",
        "plain",
    ],
)
def test_the_kind_follows_langfuse_precedence(attributes: dict[str, Any], kind: str) -> None:
    assert observation(events(span(attributes=attributes)), ROOT_ID)["kind"] == kind


def test_a_tool_span_is_named_after_its_tool() -> None:
    tool = span(
        "execute_tool",
        attributes={
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.arguments": '{"city": "Paris"}',
            "gen_ai.tool.call.result": "sunny",
        },
    )
    assert {k: v for k, v in observation(events(tool), ROOT_ID).items() if k in WANTED} == {
        "kind": "tool",
        "name": "get_weather",
        "input": {"city": "Paris"},
        "output": "sunny",
    }


WANTED = {"kind", "name", "input", "output"}


@pytest.mark.parametrize(
    ("attributes", "span_events", "io"),
    [
        (
            {},
            [
                ("gen_ai.system.message", {"content": "Be brief."}),
                ("gen_ai.user.message", {"content": "Hi"}),
                ("gen_ai.choice", {"index": 0, "message": '{"content": "Hello"}'}),
            ],
            (
                [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                {"index": 0, "message": '{"content": "Hello"}'},
            ),
        ),
        (
            {"gen_ai.input.messages": "ignored: the event comes first"},
            [
                (
                    "gen_ai.client.inference.operation.details",
                    {"gen_ai.input.messages": '[{"role": "user"}]', "gen_ai.output.messages": "[]"},
                )
            ],
            ([{"role": "user"}], []),
        ),
        (
            {
                "input.value": '{"question": "why?"}',
                "input.mime_type": "application/json",
                "output.value": "because",
            },
            [],
            ({"question": "why?"}, "because"),
        ),
        (
            {
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": "Hi",
                "gen_ai.prompt.1.role": "assistant",
                "gen_ai.prompt.1.content": "Hello",
                "gen_ai.completion.0.content": "Bye",
            },
            [],
            (
                [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                [{"content": "Bye"}],
            ),
        ),
        (
            {
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "Hi",
                "llm.output_messages.0.message.content": "Hello",
            },
            [],
            (
                [{"message": {"role": "user", "content": "Hi"}}],
                [{"message": {"content": "Hello"}}],
            ),
        ),
    ],
    ids=[
        "message-events",
        "inference-details-event",
        "openinference-values",
        "traceloop-flat",
        "openinference-flat",
    ],
)
def test_input_and_output_come_from_the_first_convention_present(
    attributes: dict[str, Any], span_events: list[tuple[str, dict[str, Any]]], io: tuple[Any, Any]
) -> None:
    found = observation(events(span(attributes=attributes, events=span_events)), ROOT_ID)
    assert (found.get("input"), found.get("output")) == io
    assert set(found["metadata"].get("attributes", {})) <= {"input.mime_type"}


def test_trace_attributes_become_one_trace_event_named_after_the_root() -> None:
    root = span("support-chat", attributes={"user.id": "u-7", "langfuse.trace.tags": ["beta"]})
    child = span(
        "answer",
        span_id=CHILD_ID,
        parent=ROOT_ID,
        end=START + 2 * SECOND,
        attributes={
            "gen_ai.conversation.id": "s-3",
            "langfuse.trace.tags": "vip, eu",
            "langfuse.trace.metadata": '{"tier": "gold"}',
            "langfuse.trace.metadata.region": "eu",
        },
    )
    resource = {
        "service.name": "shop",
        "langfuse.release": "v1.2",
        "deployment.environment.name": "Production",
    }
    trace = trace_event(events(root, child, resource=resource))
    assert trace == {
        "schema_version": 1,
        "type": "trace",
        "event_id": trace["event_id"],
        "trace_id": TRACE_ID,
        "timestamp_unix_nano": START + 2 * SECOND,
        "name": "support-chat",
        "user_id": "u-7",
        "session_id": "s-3",
        "tags": ["beta", "vip", "eu"],
        "metadata": {"tier": "gold", "region": "eu"},
        "release": "v1.2",
        "environment": "production",
    }


def test_an_explicit_trace_name_beats_the_root_span_name() -> None:
    root = span("root-span")
    child = span(
        "child", span_id=CHILD_ID, parent=ROOT_ID, attributes={"langfuse.trace.name": "checkout"}
    )
    assert trace_event(events(child, root))["name"] == "checkout"


def test_spans_without_trace_attributes_and_no_root_give_no_trace_event() -> None:
    assert [e["type"] for e in events(span("child", parent=CHILD_ID))] == ["observation"]


def test_an_open_span_has_no_end_and_a_span_without_start_starts_at_its_end() -> None:
    open_span, unstarted = events(
        span("open", end=None), span("late", span_id=CHILD_ID, parent=ROOT_ID, start=0)
    )[1:]
    assert "end_time_unix_nano" not in open_span
    assert open_span["timestamp_unix_nano"] == START
    assert unstarted["start_time_unix_nano"] == unstarted["end_time_unix_nano"] == START + SECOND


def test_event_ids_depend_only_on_content_so_a_retried_export_is_applied_once() -> None:
    first, again = events(span("a")), events(span("a"))
    changed = events(span("a", end=START + 2 * SECOND))
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert first[1]["event_id"] != changed[1]["event_id"]
    assert all(len(e["event_id"]) <= 64 for e in first)
    assert first[1]["event_id"].startswith(f"otlp:{ROOT_ID}:")


def test_json_and_protobuf_encodings_of_one_export_give_the_same_events() -> None:
    request = export(
        span(
            "root", attributes={"user.id": "u-1", "n": 3, "ratio": 0.5, "ok": True, "list": [1, 2]}
        ),
        span("child", span_id=CHILD_ID, parent=ROOT_ID, attributes=LANGFUSE_GENERATION, error="x"),
    )
    from_protobuf = translate(decode_protobuf(request.SerializeToString()))
    from_json = translate(decode_json(otlp_json(request)))
    assert from_json == from_protobuf
    assert observation([t.event for t in from_json], ROOT_ID)["metadata"]["attributes"] == {
        "n": 3,
        "ratio": 0.5,
        "ok": True,
        "list": [1, 2],
    }


def test_the_langfuse_sdk_spans_translate_to_the_trace_it_describes() -> None:
    spans = InMemorySpanExporter()
    langfuse = Langfuse(
        public_key="pk-lf-unit",
        secret_key="sk-lf-unit",
        base_url="http://127.0.0.1:9",
        tracer_provider=TracerProvider(),
        span_exporter=spans,
        environment="staging",
    )
    with (
        langfuse.start_as_current_observation(name="support", as_type="agent", input={"q": "hi"}),
        propagate_attributes(user_id="u-7", metadata={"tier": "gold", "n": "1"}),
        langfuse.start_as_current_observation(
            name="answer", as_type="generation", model="gpt-4o", metadata={"n": 1}
        ) as generation,
    ):
        generation.update(
            output="hello",
            usage_details={"input": 800, "input_cached_tokens": 200, "output": 40},
            cost_details={"input": 0.002, "input_cached_tokens": 0.0001, "output": 0.0004},
        )
    langfuse.flush()
    translated = [t.event for t in translate(encode_spans(spans.get_finished_spans()))]
    langfuse.shutdown()

    trace = trace_event(translated)
    assert (trace["name"], trace["user_id"], trace["environment"]) == ("support", "u-7", "staging")
    # The v5 SDK sends every metadata value JSON-encoded: "1" stays a string, 1 a number.
    assert trace["metadata"] == {"tier": "gold", "n": "1"}
    [answer] = [e for e in translated if e.get("name") == "answer"]
    assert answer["metadata"]["n"] == 1
    assert answer["usage"] == {
        "input_tokens": 1000,
        "input_cache_read_tokens": 200,
        "output_tokens": 40,
        "total_tokens": 1040,
    }
    assert answer["cost"] == {
        "input": 0.0021,
        "input_cache_read": 0.0001,
        "output": 0.0004,
        "total": 0.0025,
    }


BAD = "span resourceSpans[0].scopeSpans[0].spans[1] ('bad'): "


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"trace_id": "5b8efff798038103d269b633813fc6"},
            BAD + "traceId is 15 bytes; it must be 16",
        ),
        (
            {"span_id": "0000000000000000"},
            BAD + "spanId is all zeros, which W3C trace context forbids",
        ),
        (
            {"parent": "00000000000000"},
            BAD + "parentSpanId is 7 bytes; it must be 8",
        ),
        (
            {"parent": CHILD_ID},
            BAD + "parentSpanId is the span's own spanId",
        ),
        (
            {"start": 0, "end": None},
            BAD + "startTimeUnixNano and endTimeUnixNano are both 0",
        ),
    ],
    ids=["short-trace-id", "zero-span-id", "short-parent", "own-parent", "no-times"],
)
def test_an_invalid_span_is_rejected_with_a_message_naming_it(
    bad: dict[str, Any], message: str
) -> None:
    request = export(span("good"), span("bad", **{"span_id": CHILD_ID, **bad}))
    with pytest.raises(InvalidSpan) as rejected:
        translate(request)
    assert str(rejected.value) == message


def test_a_span_marked_as_root_by_the_langfuse_sdk_is_its_trace_s_root() -> None:
    # The langfuse SDK started with a trace context gives the span a parent that is never sent.
    marked = span(
        "handle",
        span_id=CHAT_ID,
        parent=ROOT_ID,
        attributes={"langfuse.internal.as_root": True, "langfuse.trace.name": "checkout"},
    )
    translated = events(marked)
    assert "parent_observation_id" not in observation(translated, CHAT_ID)
    assert trace_event(translated)["name"] == "checkout"


def test_an_impossible_completion_start_time_is_ignored_not_a_server_error() -> None:
    generation = span(
        "llm",
        span_id=CHAT_ID,
        attributes={
            "langfuse.observation.type": "generation",
            "langfuse.observation.completion_start_time": "2026-13-01T10:00:00Z",
        },
    )
    assert "completion_start_time_unix_nano" not in observation(events(generation), CHAT_ID)
