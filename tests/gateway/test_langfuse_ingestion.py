"""Translation of Langfuse ingestion events into the wire contract, and every kind of input
Langfuse (or tracebus) refuses, with the exact reason."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from tracebus.gateway.langfuse.ids import contract_id, observation_id_for, trace_id_for
from tracebus.gateway.langfuse.translation import Accepted, Rejected, translate
from tracebus.gateway.langfuse.validation import parse_timestamp
from tracebus.schemas import validate_event

UUID = "9B1C6A4E-8D2F-4F0E-A1B2-C3D4E5F60718"
HEX = "9b1c6a4e8d2f4f0ea1b2c3d4e5f60718"
AT = "2026-11-26T09:00:00.250Z"
AT_NS = 1_795_683_600_250_000_000


def event(event_type: str, envelope_id: str = "env-1", **body: Any) -> dict[str, Any]:
    return {"id": envelope_id, "type": event_type, "timestamp": AT, "body": body}


def accepted(raw: dict[str, Any]) -> dict[str, Any]:
    """The contract event a valid ingestion event becomes (checked against the contract)."""
    outcome = translate(raw)
    assert isinstance(outcome, Accepted), outcome
    validate_event(outcome.event)
    return outcome.event


def rejected(raw: Any) -> Any:
    """A refused event's reason: zod issues as JSON, or tracebus's own sentence."""
    outcome = translate(raw)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.entry()["status"] == 400 and outcome.entry()["message"] == "Invalid request data"
    try:
        return orjson.loads(outcome.error)
    except orjson.JSONDecodeError:
        return outcome.error


@pytest.mark.parametrize("langfuse_id", [UUID, UUID.lower(), HEX])
def test_a_uuid_trace_id_keeps_its_digits(langfuse_id: str) -> None:
    # HEX: Langfuse's OTel-based SDKs already send W3C trace ids.
    assert trace_id_for(langfuse_id) == HEX


@pytest.mark.parametrize("langfuse_id", ["conversation-3", "0" * 32, UUID + "-x", "x" * 800])
def test_any_other_trace_id_is_hashed(langfuse_id: str) -> None:
    mapped = trace_id_for(langfuse_id)
    assert re.fullmatch(r"[0-9a-f]{32}", mapped) and mapped != "0" * 32
    assert mapped == trace_id_for(langfuse_id) != trace_id_for(langfuse_id + "'")


def test_observation_ids_keep_span_ids_and_hash_anything_else() -> None:
    assert observation_id_for("00f067aa0ba902b7") == "00f067aa0ba902b7"
    hashed = observation_id_for(UUID)
    assert re.fullmatch(r"[0-9a-f]{16}", hashed) and hashed == observation_id_for(UUID)
    assert observation_id_for("0" * 16) != "0" * 16
    assert observation_id_for("node-1") != observation_id_for("node-2")


def test_ids_that_do_not_fit_the_contract_are_hashed() -> None:
    assert contract_id("score", "score-1") == "score-1"
    long_id = contract_id("score", "x" * 65)
    assert re.fullmatch(r"lf-[0-9a-f]{40}", long_id) and long_id == contract_id("score", "x" * 65)
    assert contract_id("score", "a b") != contract_id("score", "a_b")


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("2026-11-26T09:00:00Z", 1_795_683_600_000_000_000),
        ("2026-11-26T09:00Z", 1_795_683_600_000_000_000),
        ("2026-11-26T11:00:00+02:00", 1_795_683_600_000_000_000),
        ("2026-11-26T04:30:00.5-04:30", 1_795_683_600_500_000_000),
        ("2026-11-26T09:00:00.123456789Z", 1_795_683_600_123_456_789),
        ("2026-11-26T09:00:00.1234567899Z", 1_795_683_600_123_456_789),
    ],
)
def test_iso_timestamps_become_exact_nanoseconds(text: str, nanos: int) -> None:
    assert parse_timestamp(text) == nanos


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26 09:00:00Z",
        "2026-11-26T09:00:00",  # Langfuse requires an offset
        "2026-02-30T09:00:00Z",
        "2026-11-26T09:00:00+24:00",
        "2026-11-26T09:00:00+0200",
        "1795683600",
    ],
)
def test_what_zod_does_not_take_for_a_datetime_is_no_timestamp(text: str) -> None:
    assert parse_timestamp(text) is None


def test_a_dify_generation_becomes_a_complete_observation() -> None:
    raw = event(
        "generation-create",
        id=UUID,
        traceId=UUID,
        name="LLM",
        startTime="2026-11-26T09:00:00Z",
        endTime="2026-11-26T09:00:02Z",
        completionStartTime="2026-11-26T09:00:00.400Z",
        model="gpt-4o",
        modelParameters={"temperature": 0.2, "stop": ["\n"], "max_tokens": 512},
        input=[{"role": "user", "text": "hi"}],
        output={"text": "hello"},
        metadata={"node_type": "llm"},
        level="WARNING",
        statusMessage="",
        parentObservationId="workflow-run-1",
        version="v3",
        environment="production",
        usage={"input": 120, "output": 30, "total": 150, "unit": "TOKENS"},
    )
    assert accepted(raw) == {
        "schema_version": 1,
        "event_id": accepted(raw)["event_id"],
        "trace_id": HEX,
        "timestamp_unix_nano": AT_NS,
        "type": "observation",
        "observation_id": observation_id_for(UUID),
        "parent_observation_id": observation_id_for("workflow-run-1"),
        "kind": "generation",
        "name": "LLM",
        "start_time_unix_nano": 1_795_683_600_000_000_000,
        "end_time_unix_nano": 1_795_683_602_000_000_000,
        "completion_start_time_unix_nano": 1_795_683_600_400_000_000,
        "level": "WARNING",
        "model": "gpt-4o",
        "model_parameters": {"temperature": 0.2, "stop": '["\\n"]', "max_tokens": 512},
        "usage": {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150},
        "input": [{"role": "user", "text": "hi"}],
        "output": {"text": "hello"},
        "metadata": {
            "node_type": "llm",
            "langfuse_version": "v3",
            "langfuse_environment": "production",
            "langfuse_observation_id": UUID,
        },
    }


def test_a_trace_create_carries_every_trace_attribute() -> None:
    raw = event(
        "trace-create",
        id="session-trace-1",
        name="workflow",
        userId="u-1",
        sessionId="conversation-3",
        release="1.2.0",
        version="v7",
        public=True,
        tags=["workflow", ""],
        metadata=["not", "an", "object"],
        environment="Langfuse-Staging",
        input={"query": "q"},
        output="a",
    )
    trace = accepted(raw)
    assert trace["trace_id"] == trace_id_for("session-trace-1")
    assert {k: v for k, v in trace.items() if k not in ("event_id", "trace_id")} == {
        "schema_version": 1,
        "timestamp_unix_nano": AT_NS,
        "type": "trace",
        "name": "workflow",
        "user_id": "u-1",
        "session_id": "conversation-3",
        "release": "1.2.0",
        "tags": ["workflow"],
        "metadata": {
            "metadata": ["not", "an", "object"],
            "langfuse_version": "v7",
            "langfuse_public": True,
            "langfuse_trace_id": "session-trace-1",
        },
        "environment": "staging",
        "input": {"query": "q"},
        "output": "a",
    }


@pytest.mark.parametrize(
    ("environment", "normalized"),
    [
        ("Production", "production"),
        ("langfuse_langfuse-x", "x"),
        ("a b", "default"),
        (3, "default"),
    ],
)
def test_environments_are_normalized_as_langfuse_does(environment: Any, normalized: str) -> None:
    trace = accepted(event("trace-create", id=UUID, environment=environment))
    assert trace["environment"] == normalized


def test_a_trace_without_id_is_kept_under_an_id_derived_from_its_envelope() -> None:
    first = accepted(event("trace-create", "env-a", name="generate_conversation_name"))
    again = accepted(event("trace-create", "env-a", name="generate_conversation_name"))
    other = accepted(event("trace-create", "env-b", name="generate_conversation_name"))
    assert first == again
    assert first["trace_id"] == trace_id_for("envelope:env-a") != other["trace_id"]
    assert "metadata" not in first


def test_an_observation_without_trace_is_a_trace_of_its_own() -> None:
    span = accepted(event("span-create", id="old-sdk-span", name="step"))
    assert span["trace_id"] == trace_id_for("old-sdk-span")
    assert span["metadata"]["langfuse_trace_id"] == "old-sdk-span"


def test_creates_fill_what_the_contract_needs_and_events_are_instants() -> None:
    span = accepted(event("tool-create", id="t-1", traceId=UUID))
    assert (span["kind"], span["name"], span["start_time_unix_nano"]) == ("tool", "tool", AT_NS)
    assert "end_time_unix_nano" not in span
    instant = accepted(event("event-create", id="e-1", traceId=UUID, name="cache-hit"))
    assert instant["start_time_unix_nano"] == instant["end_time_unix_nano"] == AT_NS
    legacy = accepted(event("observation-create", id="o-1", traceId=UUID, type="EVENT"))
    assert legacy["kind"] == "event" and legacy["end_time_unix_nano"] == AT_NS


@pytest.mark.parametrize(
    "event_type",
    ["agent-create", "chain-create", "retriever-create", "evaluator-create", "embedding-create"],
)
def test_every_observation_type_keeps_its_kind(event_type: str) -> None:
    created = accepted(event(event_type, id="o-1", traceId=UUID, name="x"))
    assert created["kind"] == event_type.removesuffix("-create")


def test_updates_carry_only_the_fields_they_set() -> None:
    update = accepted(
        event("span-update", id="s-1", traceId=UUID, endTime="2026-11-26T09:00:01Z", output=1)
    )
    assert {k: v for k, v in update.items() if k != "event_id"} == {
        "schema_version": 1,
        "trace_id": HEX,
        "timestamp_unix_nano": AT_NS,
        "type": "observation_update",
        "observation_id": observation_id_for("s-1"),
        "end_time_unix_nano": 1_795_683_601_000_000_000,
        "output": 1,
        "metadata": {"langfuse_observation_id": "s-1"},
    }
    generation = accepted(event("generation-update", id="g-1", traceId=UUID, model="gpt-4o"))
    assert (generation["kind"], generation["model"]) == ("generation", "gpt-4o")
    assert "name" not in generation and "start_time_unix_nano" not in generation
    legacy = accepted(event("observation-update", id="g-1", traceId=UUID, type="GENERATION"))
    assert legacy["type"] == "observation_update" and legacy["kind"] == "generation"


USAGE_CASES = {
    "legacy usage": (
        {"usage": {"input": 10, "output": 5, "total": 15, "unit": "TOKENS"}},
        {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        None,
    ),
    "total derived": (
        {"usage": {"input": 10, "output": 5}},
        {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        None,
    ),
    "camel-case openai": (
        {"usage": {"promptTokens": 7, "completionTokens": 3, "totalTokens": 10}},
        {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
        None,
    ),
    "characters": (
        {"usage": {"input": 40, "output": 12, "total": 52, "unit": "CHARACTERS"}},
        {"other": {"input_characters": 40, "output_characters": 12, "total_characters": 52}},
        None,
    ),
    "exclusive details": (
        {
            "usageDetails": {
                "input": 80,
                "input_cached_tokens": 20,
                "input_audio_tokens": 5,
                "output": 30,
                "output_reasoning_tokens": 10,
                "total": 145,
                "requests": 1,
            }
        },
        {
            "input_tokens": 105,
            "input_cache_read_tokens": 20,
            "input_audio_tokens": 5,
            "output_tokens": 40,
            "output_reasoning_tokens": 10,
            "total_tokens": 145,
            "other": {"requests": 1},
        },
        None,
    ),
    "anthropic names": (
        {
            "usageDetails": {
                "input": 10,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 50,
                "output": 5,
            }
        },
        {
            "input_tokens": 160,
            "input_cache_read_tokens": 100,
            "input_cache_creation_tokens": 50,
            "output_tokens": 5,
            "total_tokens": 165,
        },
        None,
    ),
    "openai chat completion": (
        {
            "usageDetails": {
                "prompt_tokens": 100,
                "completion_tokens": 40,
                "total_tokens": 140,
                "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": None},
                "completion_tokens_details": {"reasoning_tokens": 25},
            }
        },
        {
            "input_tokens": 100,
            "input_cache_read_tokens": 60,
            "output_tokens": 40,
            "output_reasoning_tokens": 25,
            "total_tokens": 140,
        },
        None,
    ),
    "openai responses": (
        {"usageDetails": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}},
        {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13},
        None,
    ),
    "raw values langfuse keeps or drops": (
        {"usageDetails": {"input": "12", "output": 2.5, "other_thing": -1, "images": True}},
        {"input_tokens": 12, "total_tokens": 12},
        None,
    ),
    "details override usage": (
        {"usage": {"input": 100, "output": 20, "total": 120}, "usageDetails": {"input": 90}},
        {"input_tokens": 90, "output_tokens": 20, "total_tokens": 120},
        None,
    ),
    "legacy costs": (
        {"usage": {"input": 1, "output": 1, "inputCost": 0.01, "totalCost": 0.03}},
        {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
        {"input": 0.01, "total": 0.03},
    ),
    "cost details": (
        {
            "costDetails": {
                "input": 0.004,
                "input_cached_tokens": 0.001,
                "output": 0.01,
                "refund": -1,
                "label": "x",
            }
        },
        None,
        {"input": 0.005, "input_cache_read": 0.001, "output": 0.01, "total": 0.015},
    ),
}


@pytest.mark.parametrize(("fields", "usage", "cost"), USAGE_CASES.values(), ids=USAGE_CASES)
def test_langfuse_usage_and_cost_become_inclusive_buckets(
    fields: dict[str, Any], usage: dict[str, Any] | None, cost: dict[str, Any] | None
) -> None:
    generation = accepted(event("generation-create", id="g", traceId=UUID, **fields))
    assert generation.get("usage") == usage
    assert generation.get("cost") == (pytest.approx(cost) if cost else None)


SCORE_CASES = {
    "numeric inferred": ({"value": 4}, "NUMERIC", 4.0, {}),
    "categorical inferred": ({"value": "good"}, "CATEGORICAL", "good", {}),
    "boolean": ({"value": 1, "dataType": "BOOLEAN"}, "BOOLEAN", True, {}),
    "text": (
        {"value": "long answer", "dataType": "TEXT"},
        "CATEGORICAL",
        "long answer",
        {"langfuse_data_type": "TEXT"},
    ),
    "annotation with config": (
        {"value": 2, "source": "ANNOTATION", "configId": "cfg-1"},
        "NUMERIC",
        2.0,
        {"langfuse_config_id": "cfg-1"},
    ),
}


@pytest.mark.parametrize(
    ("fields", "data_type", "value", "metadata"), SCORE_CASES.values(), ids=SCORE_CASES
)
def test_scores_get_langfuse_s_data_type(
    fields: dict[str, Any], data_type: str, value: Any, metadata: dict[str, Any]
) -> None:
    score = accepted(event("score-create", id="score-1", traceId=UUID, name="quality", **fields))
    assert (score["data_type"], score["value"], score["score_id"]) == (data_type, value, "score-1")
    assert score.get("metadata", {}) == metadata
    assert score["source"] == fields.get("source", "API")


def test_a_score_of_an_observation_and_a_score_without_id() -> None:
    score = accepted(
        event("score-create", "env-9", traceId=UUID, observationId="node-1", name="q", value=1)
    )
    assert score["observation_id"] == observation_id_for("node-1")
    assert score["score_id"] == "envelope:env-9"
    assert score["metadata"] == {"langfuse_observation_id": "node-1"}


def test_an_sdk_log_is_reported_in_neither_list() -> None:
    assert translate(event("sdk-log", log={"message": "flush"})) is None


def test_event_ids_are_derived_from_envelope_type_and_body_id() -> None:
    def event_id(envelope: str, event_type: str, body_id: str) -> str:
        return accepted(event(event_type, envelope, id=body_id, traceId=UUID))["event_id"]

    ids = {
        event_id("env-1", "span-create", "s-1"),
        event_id("env-1", "span-update", "s-1"),
        event_id("env-1", "span-create", "s-2"),
        event_id("env-2", "span-create", "s-1"),
    }
    assert len(ids) == 4 and all(re.fullmatch(r"lf-[0-9a-f]{40}", i) for i in ids)
    assert event_id("env-1", "span-create", "s-1") in ids


def zod(path: list[Any], message: str, code: str = "custom", **extra: Any) -> list[Any]:
    return [{"code": code, **extra, "path": path, "message": message}]


def expected(path: list[Any], expected_type: str, received: str) -> list[Any]:
    message = f"Invalid input: expected {expected_type}, received {received}"
    return zod(path, message, "invalid_type", expected=expected_type)


def envelope(**fields: Any) -> dict[str, Any]:
    return {"id": "env-1", "type": "span-create", "timestamp": AT, **fields}


BAD_INPUT: dict[str, tuple[Any, Any]] = {
    "not an object": ("span-create", expected([], "object", "string")),
    "unknown type": (
        envelope(type="trace-update", body={}),
        zod(
            ["type"],
            "Invalid input",
            "invalid_union",
            errors=[],
            note="No matching discriminator",
            discriminator="type",
        ),
    ),
    "no timestamp": (
        {"id": "env-1", "type": "span-create", "body": {"id": "s"}},
        expected(["timestamp"], "string", "undefined"),
    ),
    "timestamp without offset": (
        envelope(timestamp="2026-11-26T09:00:00", body={"id": "s"}),
        zod(["timestamp"], "Invalid ISO datetime", "invalid_format", format="datetime"),
    ),
    "no body": (envelope(), expected(["body"], "object", "undefined")),
    "envelope id too long": (
        envelope(id="e" * 801, body={"id": "s"}),
        zod(
            ["id"],
            "Too big: expected string to have <=800 characters",
            "too_big",
            origin="string",
            maximum=800,
        ),
    ),
    "dataset run item": (
        envelope(type="dataset-run-item-create", body={}),
        zod([], "Dataset run item creation is only allowed for internal usage"),
    ),
    "observation id with carriage return": (
        event("span-create", id="a\rb", traceId=UUID),
        zod(["body", "id"], "ID cannot contain carriage return characters"),
    ),
    "empty observation id": (
        event("generation-create", id="", traceId=UUID),
        zod(
            ["body", "id"],
            "Too small: expected string to have >=1 characters",
            "too_small",
            minimum=1,
        ),
    ),
    "observation start not a datetime": (
        event("span-create", id="s", traceId=UUID, startTime=1795683600),
        expected(["body", "startTime"], "string", "number"),
    ),
    "tags not a list": (
        event("trace-create", id=UUID, tags="a,b"),
        expected(["body", "tags"], "array", "string"),
    ),
    "trace name too long": (
        event("trace-create", id=UUID, name="n" * 1001),
        zod(
            ["body", "name"],
            "Too big: expected string to have <=1000 characters",
            "too_big",
            origin="string",
            maximum=1000,
        ),
    ),
    "fractional usage": (
        event("generation-create", id="g", traceId=UUID, usage={"input": 1.5}),
        expected(["body", "usage", "input"], "int", "number"),
    ),
    "unknown usage unit": (
        event("generation-create", id="g", traceId=UUID, usage={"input": 1, "unit": "BYTES"}),
        zod(
            ["body", "usage", "unit"],
            "Invalid option: expected one of "
            '"CHARACTERS"|"TOKENS"|"SECONDS"|"MILLISECONDS"|"IMAGES"|"REQUESTS"',
            "invalid_value",
            values=["CHARACTERS", "TOKENS", "SECONDS", "MILLISECONDS", "IMAGES", "REQUESTS"],
        ),
    ),
    "usage details not an object": (
        event("generation-create", id="g", traceId=UUID, usageDetails=[1]),
        zod(["body", "usageDetails"], "Invalid input", "invalid_union"),
    ),
    "nested model parameter": (
        event("generation-create", id="g", traceId=UUID, modelParameters={"tools": [{"a": 1}]}),
        zod(["body", "modelParameters", "tools"], "Invalid input", "invalid_union"),
    ),
    "prompt name without version": (
        event("generation-create", id="g", traceId=UUID, promptName="p"),
        zod(["body"], "Invalid input"),
    ),
    "legacy observation without type": (
        event("observation-create", id="o", traceId=UUID),
        zod(
            ["body", "type"],
            'Invalid option: expected one of "GENERATION"|"SPAN"|"EVENT"',
            "invalid_value",
            values=["GENERATION", "SPAN", "EVENT"],
        ),
    ),
    "score without name": (
        event("score-create", traceId=UUID, value=1),
        expected(["body", "name"], "string", "undefined"),
    ),
    "numeric score with text": (
        event("score-create", traceId=UUID, name="q", value="high", dataType="NUMERIC"),
        zod(["body", "value"], "Invalid input: expected number, received string"),
    ),
    "boolean score of 2": (
        event("score-create", traceId=UUID, name="q", value=2, dataType="BOOLEAN"),
        zod(
            ["body", "value"], "Value must be a number equal to either 0 or 1 for data type BOOLEAN"
        ),
    ),
    "score of nothing": (
        event("score-create", name="q", value=1),
        zod(
            ["body", "traceId", "sessionId", "datasetRunId", "observationId"],
            "Provide exactly one of the following: traceId (with optional observationId), "
            "sessionId or datasetRunId. ObservationId requires traceId.",
        ),
    ),
    "sdk log without log": (
        event("sdk-log"),
        zod(["body", "log"], "Invalid input", "invalid_union"),
    ),
    "annotation without config": (
        event("score-create", traceId=UUID, name="q", value=1, source="ANNOTATION"),
        "configId is required when source is ANNOTATION (except for CORRECTION scores).",
    ),
    "score of a session": (
        event("score-create", sessionId="s-1", name="q", value=1),
        "tracebus keeps scores of traces and observations; scores of a session or a dataset "
        "run are not supported",
    ),
    "update without trace": (
        event("span-update", id="s-1", endTime=AT),
        "tracebus needs body.traceId on updates: the gateway keeps no state to find the trace "
        "of an earlier observation",
    ),
    "legacy update without id": (
        event("observation-update", traceId=UUID, type="SPAN"),
        "tracebus needs body.id to know which observation to update",
    ),
}


@pytest.mark.parametrize(("raw", "reason"), BAD_INPUT.values(), ids=BAD_INPUT)
def test_bad_input_is_refused_with_the_exact_reason(raw: Any, reason: Any) -> None:
    assert rejected(raw) == reason


def test_all_problems_of_a_body_are_reported_at_once() -> None:
    issues = rejected(event("span-create", traceId=UUID, level="LOUD", startTime="yesterday"))
    assert [issue["path"] for issue in issues] == [
        ["body", "id"],
        ["body", "startTime"],
        ["body", "level"],
    ]
