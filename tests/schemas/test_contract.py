"""The wire contract: what is accepted, and how every problem is reported."""

from __future__ import annotations

import orjson
import pytest

from tracebus.schemas import (
    EventTooLarge,
    Limits,
    SchemaError,
    decode_batch,
    decode_document,
    encode_batch,
    normalize_usage,
    parse_traceparent,
    serialize_event,
    validate_event,
)
from tracebus.schemas.ids import format_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
CHILD = "a3ce929d0e0e4736"


def observation(**fields: object) -> dict[str, object]:
    return {
        "schema_version": 1,
        "type": "observation",
        "event_id": "e1",
        "trace_id": TRACE,
        "timestamp_unix_nano": 2,
        "observation_id": CHILD,
        "parent_observation_id": SPAN,
        "kind": "generation",
        "name": "answer",
        "start_time_unix_nano": 1,
        **fields,
    }


def record(*events: dict[str, object]) -> bytes:
    return encode_batch(TRACE, [orjson.dumps(event) for event in events])


def test_a_batch_of_every_event_type_decodes() -> None:
    trace = {
        "schema_version": 1,
        "type": "trace",
        "event_id": "t1",
        "trace_id": TRACE,
        "timestamp_unix_nano": 3,
        "name": "chat",
        "user_id": "u",
        "tags": ["x"],
        "environment": "prod",
    }
    score = {
        "schema_version": 1,
        "type": "score",
        "event_id": "s1",
        "trace_id": TRACE,
        "timestamp_unix_nano": 4,
        "score_id": "q",
        "name": "quality",
        "value": 0.5,
        "data_type": "NUMERIC",
    }
    generation = observation(
        model="gpt-4o",
        usage={"input_tokens": 10, "input_cache_read_tokens": 4},
        cost={"input": 0.1, "total": 0.1},
        completion_start_time_unix_nano=5,
    )
    batch = decode_batch(record(generation, trace, score))
    assert [event.type for event in batch.events] == ["observation", "trace", "score"]
    assert batch.events[0].usage.input_cache_read_tokens == 4


def test_validation_lists_every_problem_with_its_path() -> None:
    bad = observation(
        trace_id="XYZ",
        observation_id="0000000000000000",
        kind="llm",
        start_time_unix_nano=-1,
        usage={"input_tokens": -3, "bogus": 1},
    )
    with pytest.raises(SchemaError) as caught:
        decode_batch(encode_batch(TRACE, [orjson.dumps(bad)]))
    problems = {problem.path: problem.message for problem in caught.value.problems}
    assert problems["events[0].trace_id"] == "a trace id is 32 lowercase hex characters"
    assert "all-zero span id" in problems["events[0].observation_id"]
    assert "'span', 'generation'" in problems["events[0].kind"]
    assert "greater than or equal to 0" in problems["events[0].start_time_unix_nano"]
    assert "greater than or equal to 0" in problems["events[0].usage.input_tokens"]
    assert "Extra inputs are not permitted" in problems["events[0].usage.bogus"]
    assert len(caught.value.problems) == 6


def test_an_unknown_schema_version_is_named_in_the_error() -> None:
    with pytest.raises(
        SchemaError, match="unsupported schema_version 2; this build reads version 1"
    ):
        decode_batch(b'{"schema_version":2,"trace_id":"%s","events":[]}' % TRACE.encode())


def test_malformed_json_and_oversize_records_are_rejected_clearly() -> None:
    with pytest.raises(SchemaError, match="malformed JSON"):
        decode_batch(b'{"schema_version":1,')
    with pytest.raises(SchemaError, match="record is 2001 bytes; limit 2000"):
        decode_batch(b" " * 2001, max_record_bytes=2000)


def test_a_trace_document_is_decoded_with_the_same_clear_errors() -> None:
    with pytest.raises(SchemaError, match="malformed JSON"):
        decode_document(b'{"schema_version":1,')
    with pytest.raises(SchemaError, match="unsupported schema_version 2"):
        decode_document(b'{"schema_version":2}')


def test_an_error_names_its_first_ten_problems_and_counts_the_rest() -> None:
    """Its message travels in a dead letter's header; every problem stays in `problems`."""
    bad = [observation(event_id=f"e{i}", kind="llm") for i in range(12)]
    with pytest.raises(SchemaError) as caught:
        decode_batch(record(*bad))
    assert len(caught.value.problems) == 12
    assert str(caught.value).count("events[") == 10
    assert str(caught.value).endswith(" (and 2 more)")


def test_an_observation_cannot_be_its_own_parent() -> None:
    with pytest.raises(SchemaError, match="cannot be its own parent"):
        validate_event(observation(parent_observation_id=CHILD))


def test_events_of_another_trace_do_not_belong_in_the_batch() -> None:
    stranger = observation(trace_id="1" * 32)
    with pytest.raises(SchemaError, match="belongs to trace 1111"):
        decode_batch(record(stranger))


@pytest.mark.parametrize(
    ("value", "data_type"), [(0.5, "CATEGORICAL"), ("good", "NUMERIC"), (1, "BOOLEAN")]
)
def test_a_score_value_must_fit_its_data_type(value: object, data_type: str) -> None:
    score = {
        "schema_version": 1,
        "type": "score",
        "event_id": "s1",
        "trace_id": TRACE,
        "timestamp_unix_nano": 4,
        "score_id": "q",
        "name": "q",
        "value": value,
        "data_type": data_type,
    }
    with pytest.raises(SchemaError, match="does not fit data_type"):
        validate_event(score)


def test_oversized_input_is_truncated_with_a_marker_and_recorded() -> None:
    limits = Limits(max_field_bytes=1024, max_event_bytes=4096)
    event = observation(input="x" * 5000, output="short", metadata={"blob": "y" * 3000})
    data = serialize_event(event, limits)
    assert len(data) <= limits.max_event_bytes
    parsed = validate_event(data)
    assert parsed.input.startswith('"xxx')
    assert parsed.input.endswith("…[truncated by tracebus: 5002 bytes]")
    assert parsed.output == "short"
    assert list(parsed.metadata) == ["tracebus.truncated"]
    assert {(t.field, t.original_bytes) for t in parsed.truncated} == {
        ("input", 5002),
        ("metadata", 3011),
    }


def test_fields_within_their_limit_are_cut_further_to_fit_the_event_limit() -> None:
    limits = Limits(max_field_bytes=3000, max_event_bytes=4000)
    data = serialize_event(observation(input="a" * 2500, output="b" * 2500), limits)
    assert len(data) <= limits.max_event_bytes
    assert validate_event(data).truncated


def test_an_event_too_large_without_truncatable_fields_is_refused() -> None:
    limits = Limits(max_field_bytes=1024, max_event_bytes=2048)
    trace = {
        "schema_version": 1,
        "type": "trace",
        "event_id": "t1",
        "trace_id": TRACE,
        "timestamp_unix_nano": 3,
        "tags": [f"tag-{i}" for i in range(500)],
    }
    with pytest.raises(EventTooLarge, match="the limit is 2048 bytes"):
        serialize_event(trace, limits)


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        (  # OpenAI chat completions: details are parts of the totals
            {
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 40},
                "completion_tokens_details": {"reasoning_tokens": 8},
            },
            {
                "input_tokens": 100,
                "output_tokens": 20,
                "total_tokens": 120,
                "input_cache_read_tokens": 40,
                "output_reasoning_tokens": 8,
            },
        ),
        (  # Anthropic: input_tokens excludes cache reads and writes
            {
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_input_tokens": 30,
                "cache_creation_input_tokens": 7,
            },
            {
                "input_tokens": 47,
                "output_tokens": 5,
                "total_tokens": 52,
                "input_cache_read_tokens": 30,
                "input_cache_creation_tokens": 7,
            },
        ),
        (  # OpenAI responses API, with an unknown counter kept apart
            {
                "input_tokens": 9,
                "output_tokens": 3,
                "input_tokens_details": {"cached_tokens": 2},
                "web_search_calls": 1,
            },
            {
                "input_tokens": 9,
                "output_tokens": 3,
                "total_tokens": 12,
                "input_cache_read_tokens": 2,
                "other": {"web_search_calls": 1},
            },
        ),
    ],
)
def test_provider_usage_shapes_become_inclusive_buckets(
    reported: dict[str, object], expected: dict[str, object]
) -> None:
    assert normalize_usage(reported) == expected


def test_traceparent_round_trips_and_rejects_bad_headers() -> None:
    header = format_traceparent(TRACE, SPAN, sampled=False)
    assert header == f"00-{TRACE}-{SPAN}-00"
    parsed = parse_traceparent(header)
    assert (parsed.trace_id, parsed.parent_observation_id, parsed.sampled) == (TRACE, SPAN, False)
    with pytest.raises(ValueError, match="all-zero trace id"):
        parse_traceparent(f"00-{'0' * 32}-{SPAN}-01")
    with pytest.raises(ValueError, match="version ff is forbidden"):
        parse_traceparent(f"ff-{TRACE}-{SPAN}-01")
    with pytest.raises(ValueError, match="is not 'version-traceid32-spanid16-flags'"):
        parse_traceparent("garbage")
