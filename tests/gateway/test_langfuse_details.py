"""Langfuse's usage and cost details, read once for every endpoint Langfuse traffic arrives on:
the same details give the same buckets over OTLP and the legacy batch ingestion, and what
tracebus's own Langfuse sink writes reads back as the buckets it was written from."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from otlp_requests import ROOT_ID, export, span

from tracebus.gateway.langfuse.translation import Accepted
from tracebus.gateway.langfuse.translation import translate as translate_ingestion
from tracebus.gateway.langfuse_details import (
    cost_details,
    inclusive_cost,
    inclusive_usage,
    usage_count,
    usage_details,
)
from tracebus.gateway.otlp.spans import translate as translate_otlp
from tracebus.schemas import Cost, Usage
from tracebus.sinks.langfuse import details as sink

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    "usage",
    [
        Usage(input_tokens=120, output_tokens=30, total_tokens=150),
        Usage(
            input_tokens=1000,
            input_cache_read_tokens=600,
            input_cache_creation_tokens=100,
            input_audio_tokens=50,
            output_tokens=80,
            output_reasoning_tokens=30,
            output_audio_tokens=10,
            total_tokens=1080,
            other={"web_searches": 2},
        ),
        Usage(input_tokens=40, input_cache_read_tokens=40, output_tokens=0, total_tokens=40),
    ],
    ids=["plain", "every-part", "all-cached"],
)
def test_usage_the_langfuse_sink_writes_reads_back_as_its_buckets(usage: Usage) -> None:
    written = sink.usage_details(usage)
    assert inclusive_usage(usage_details(written)) == usage.model_dump(exclude_none=True)


@pytest.mark.parametrize(
    "cost",
    [
        Cost(input=0.0021, input_cache_read=0.0001, output=0.0004, total=0.0025),
        Cost(
            input=0.003,
            input_cache_read=0.0007,
            input_cache_creation=0.0011,
            input_audio=0.0003,
            output=0.006,
            output_reasoning=0.0015,
            output_audio=0.0002,
            total=0.009,
            other={"web_search": 0.01},
        ),
    ],
    ids=["cached", "every-part"],
)
def test_cost_the_langfuse_sink_writes_reads_back_as_its_buckets(cost: Cost) -> None:
    written = sink.cost_details(cost)
    assert inclusive_cost(cost_details(written)) == cost.model_dump(exclude_none=True)


# Details each endpoint once read differently: cache-creation TTL splits, the sink's names
# beside Langfuse's, Anthropic's names beside `input`, input/output keys of no bucket, integer
# strings, and an OpenAI object.
SAME_ON_BOTH_ENDPOINTS = [
    {
        "input": 100,
        "input_cache_creation_5m": 30,
        "input_cache_write": 20,
        "input_cache_read": 5,
        "output": 40,
        "output_accepted_prediction_tokens": 4,
        "web_searches": 2,
    },
    {"input": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": "50", "output": 5},
    {"input": " 12 tokens", "output": 3.0, "total": -1, "images": True},
    {
        "input_tokens": 90,
        "output_tokens": 9,
        "total_tokens": 99,
        "input_tokens_details": {"cached_tokens": 80},
        "output_tokens_details": {"reasoning_tokens": 2},
    },
]


@pytest.mark.parametrize(
    "details", SAME_ON_BOTH_ENDPOINTS, ids=["parts", "anthropic", "raw", "openai"]
)
def test_the_same_details_give_the_same_buckets_on_both_endpoints(details: dict[str, Any]) -> None:
    costs = {key: 0.001 for key in details}
    ingestion = translate_ingestion(
        {
            "id": "env-1",
            "type": "generation-create",
            "timestamp": "2026-09-21T10:00:00.000Z",
            "body": {"id": "g", "traceId": UUID, "usageDetails": details, "costDetails": costs},
        }
    )
    assert isinstance(ingestion, Accepted), ingestion
    attributes = {
        "langfuse.observation.usage_details": orjson.dumps(details).decode(),
        "langfuse.observation.cost_details": orjson.dumps(costs).decode(),
    }
    translated = [t.event for t in translate_otlp(export(span(attributes=attributes)))]
    [otlp] = [e for e in translated if e.get("observation_id") == ROOT_ID]
    assert ingestion.event["usage"] == otlp["usage"] == inclusive_usage(usage_details(details))
    assert ingestion.event["cost"] == otlp["cost"] == inclusive_cost(cost_details(costs))


@pytest.mark.parametrize(
    ("value", "count"),
    [
        (12, 12),
        (3.0, 3),
        ("12", 12),
        (" 12 tokens", 12),
        ("+7", 7),
        (2.5, None),
        (-1, None),
        ("-1", None),
        ("tokens", None),
        ("٣", None),  # parseInt reads ASCII digits only
        ("²", None),
        (True, None),
        (None, None),
    ],
)
def test_a_usage_value_is_kept_as_langfuse_keeps_it(value: Any, count: int | None) -> None:
    assert usage_count(value) == count


def test_an_openai_object_becomes_exclusive_keys_as_langfuse_converts_it() -> None:
    chat = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": None},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    assert usage_details(chat) == {
        "input": 40,
        "input_cached_tokens": 60,
        "output": 15,
        "output_reasoning_tokens": 25,
        "total": 140,
    }


@pytest.mark.parametrize(
    "details",
    [
        {"prompt_tokens": 90, "completion_tokens": 9},
        {"prompt_tokens": 90, "completion_tokens": 9, "total_tokens": 99, "model": "x"},
        {"input_tokens": 9, "output_tokens": 4, "total_tokens": "13"},
        {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13, "input_tokens_details": []},
    ],
    ids=["no-total", "extra-key", "string-count", "details-not-an-object"],
)
def test_anything_but_an_exact_openai_object_is_read_as_raw_keys(details: dict[str, Any]) -> None:
    # Langfuse's OpenAI schemas are strict; what fails them falls through to raw counts.
    raw = {key: n for key, value in details.items() if (n := usage_count(value)) is not None}
    assert usage_details(details) == raw
