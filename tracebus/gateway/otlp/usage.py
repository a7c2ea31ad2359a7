"""Token usage and cost of a span, in the contract's inclusive buckets: from Langfuse's
`usage_details` and `cost_details` (exclusive buckets), else from the GenAI / OpenInference
token counts and cost totals."""

from __future__ import annotations

from typing import Any

from tracebus.gateway.json_values import is_number
from tracebus.gateway.langfuse_details import (
    cost_details,
    inclusive_cost,
    inclusive_usage,
    usage_count,
    usage_details,
)
from tracebus.gateway.otlp.attributes import Attributes, parse_json_text

# The contract's usage fields, from the keys of generic (inclusive) GenAI usage attributes after
# `gen_ai.usage.` / `llm.token_count.`, the first key present of each.
_GENERIC_USAGE = {
    "input_tokens": ("prompt_tokens", "input_tokens", "prompt"),
    "output_tokens": ("completion_tokens", "output_tokens", "completion"),
    "total_tokens": ("total_tokens", "total"),
    "input_cache_read_tokens": (
        "cache_read.input_tokens",
        "cache_read_input_tokens",
        "cache_read_tokens",
        "details.cache_read_tokens",
        "details.cache_read_input_tokens",
        "prompt_details.cache_read",
        "input_cached_tokens",
    ),
    "input_cache_creation_tokens": (
        "cache_creation.input_tokens",
        "cache_creation_input_tokens",
        "cache_write_tokens",
        "details.cache_write_tokens",
        "details.cache_creation_input_tokens",
        "prompt_details.cache_write",
        "input_cache_creation",
    ),
    "input_audio_tokens": ("prompt_details.audio",),
    "output_reasoning_tokens": ("reasoning.output_tokens", "completion_details.reasoning"),
    "output_audio_tokens": ("completion_details.audio",),
}


def read_usage(attributes: Attributes) -> dict[str, Any] | None:
    """Token usage in tracebus's inclusive buckets: Langfuse's `usage_details` (exclusive
    buckets, or an OpenAI usage object), else the GenAI / OpenInference token counts."""
    details = parse_json_text(attributes.values.get("langfuse.observation.usage_details"))
    if isinstance(details, dict):
        attributes.discard(["langfuse.observation.usage_details"])
        return inclusive_usage(usage_details(details)) or None
    generic = {
        **attributes.prefixed("llm.token_count."),
        **{k: v for k, v in attributes.prefixed("gen_ai.usage.").items() if k != "cost"},
    }
    counts = {key: count for key, v in generic.items() if (count := usage_count(v)) is not None}
    return _generic_usage(counts) or None


def read_cost(attributes: Attributes) -> dict[str, Any] | None:
    """Cost in USD: Langfuse's `cost_details` (exclusive) as inclusive buckets, else a total."""
    details = parse_json_text(attributes.values.get("langfuse.observation.cost_details"))
    if isinstance(details, dict):
        attributes.discard(["langfuse.observation.cost_details"])
        return inclusive_cost(cost_details(details)) or None
    total = attributes.get("gen_ai.usage.cost", "llm.cost.total")
    if is_number(total) and total >= 0:
        return {"total": float(total)}
    return None


def _generic_usage(counts: dict[str, int]) -> dict[str, Any]:
    """Generic token counts as the contract's usage fields; keys of no field go to `other`."""
    if not counts:  # most spans are not LLM calls
        return {}
    buckets: dict[str, Any] = {}
    taken: set[str] = set()
    for bucket, keys in _GENERIC_USAGE.items():
        key = next((k for k in keys if k in counts), None)
        if key is not None:
            buckets[bucket] = counts[key]
            taken.update(keys)
    other = {k.removeprefix("details."): v for k, v in counts.items() if k not in taken}
    if "total_tokens" not in buckets and ("input_tokens" in buckets or "output_tokens" in buckets):
        buckets["total_tokens"] = buckets.get("input_tokens", 0) + buckets.get("output_tokens", 0)
    if other:
        buckets["other"] = other
    return buckets
