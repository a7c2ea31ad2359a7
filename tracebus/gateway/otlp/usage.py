"""Token usage and cost of a span, in the contract's inclusive buckets: from Langfuse's
`usage_details` and `cost_details` (exclusive buckets), else from the GenAI / OpenInference
token counts and cost totals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracebus.gateway.json_values import is_number
from tracebus.gateway.otlp.attributes import Attributes, parse_json_text
from tracebus.schemas import normalize_usage

_COST_DECIMALS = 12
# Keys of generic (inclusive) GenAI usage attributes, after `gen_ai.usage.` / `llm.token_count.`.
_GENERIC_USAGE = {
    "input": ("prompt_tokens", "input_tokens", "prompt"),
    "output": ("completion_tokens", "output_tokens", "completion"),
    "total": ("total_tokens", "total"),
    "input_cache_read": (
        "cache_read.input_tokens",
        "cache_read_input_tokens",
        "cache_read_tokens",
        "details.cache_read_tokens",
        "details.cache_read_input_tokens",
        "prompt_details.cache_read",
        "input_cached_tokens",
    ),
    "input_cache_creation": (
        "cache_creation.input_tokens",
        "cache_creation_input_tokens",
        "cache_write_tokens",
        "details.cache_write_tokens",
        "details.cache_creation_input_tokens",
        "prompt_details.cache_write",
        "input_cache_creation",
    ),
    "input_audio": ("prompt_details.audio",),
    "output_reasoning": ("reasoning.output_tokens", "completion_details.reasoning"),
    "output_audio": ("completion_details.audio",),
}
_PROVIDER_SHAPE = frozenset({"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens"})


def read_usage(attributes: Attributes) -> dict[str, Any] | None:
    """Token usage in tracebus's inclusive buckets: Langfuse's `usage_details` (exclusive
    buckets, or a provider's usage object), else the GenAI / OpenInference token counts."""
    details = parse_json_text(attributes.values.get("langfuse.observation.usage_details"))
    if isinstance(details, dict):
        attributes.discard(["langfuse.observation.usage_details"])
        if _PROVIDER_SHAPE & details.keys():
            return normalize_usage(details) or None
        return _usage_buckets(_inclusive(_counts(details)))
    generic = {
        **attributes.prefixed("llm.token_count."),
        **{k: v for k, v in attributes.prefixed("gen_ai.usage.").items() if k != "cost"},
    }
    return _usage_buckets(_generic_usage(_counts(generic)))


def read_cost(attributes: Attributes) -> dict[str, Any] | None:
    """Cost in USD: Langfuse's `cost_details` (exclusive) as inclusive buckets, else a total."""
    details = parse_json_text(attributes.values.get("langfuse.observation.cost_details"))
    if isinstance(details, dict):
        attributes.discard(["langfuse.observation.cost_details"])
        amounts = {k: float(v) for k, v in details.items() if is_number(v) and v >= 0}
        return _usd(_inclusive(amounts)) or None
    total = attributes.get("gen_ai.usage.cost", "llm.cost.total")
    if is_number(total) and total >= 0:
        return {"total": float(total)}
    return None


def _counts(values: Mapping[str, Any]) -> dict[str, int]:
    """Non-negative whole token counts (Langfuse drops anything else), integer strings too."""
    counts = {}
    for key, value in values.items():
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            counts[key] = value
    return counts


def _generic_usage(counts: dict[str, int]) -> dict[str, Any]:
    buckets: dict[str, Any] = {}
    taken: set[str] = set()
    for bucket, keys in _GENERIC_USAGE.items():
        key = next((k for k in keys if k in counts), None)
        if key is not None:
            buckets[bucket] = counts[key]
            taken.update(keys)
    other = {k.removeprefix("details."): v for k, v in counts.items() if k not in taken}
    if "total" not in buckets and ("input" in buckets or "output" in buckets):
        buckets["total"] = buckets.get("input", 0) + buckets.get("output", 0)
    if other:
        buckets["other"] = other
    return buckets


def _bucket(key: str) -> str | None:
    """Where one of Langfuse's exclusive detail keys belongs: a tracebus bucket, the rest of
    input or output counted in its total only (`input_other`, `output_other`), or None for
    neither."""
    if key == "total":
        return "total"
    side = next((s for s in ("input", "output") if key.startswith(s)), None)
    if side is None:
        return None
    rest = key[len(side) :]
    if not rest:
        return side
    parts = (
        (("cache_read", "cached"), "input_cache_read"),
        (("cache_creation", "cache_write"), "input_cache_creation"),
        (("audio",), "input_audio"),
    )
    if side == "output":
        parts = ((("reasoning",), "output_reasoning"), (("audio",), "output_audio"))
    found = (bucket for marks, bucket in parts if any(mark in rest for mark in marks))
    return next(found, f"{side}_other")


def _inclusive(details: Mapping[str, float]) -> dict[str, Any]:
    """Langfuse's exclusive details (every key priced on its own; `input`/`output` without the
    parts listed beside them) as inclusive buckets: `input` sums every input key, `output`
    every output key; keys of neither side go to `other`."""
    buckets: dict[str, Any] = {}
    other: dict[str, float] = {}
    for key, amount in details.items():
        bucket = _bucket(key)
        if bucket is None:
            other[key] = amount
            continue
        if bucket != "total":
            side = bucket.split("_")[0]
            buckets[side] = buckets.get(side, 0) + amount
        if bucket not in ("input", "output", "input_other", "output_other"):
            buckets[bucket] = buckets.get(bucket, 0) + amount
    if "total" not in buckets and ("input" in buckets or "output" in buckets):
        buckets["total"] = buckets.get("input", 0) + buckets.get("output", 0)
    if other:
        buckets["other"] = other
    return buckets


def _usage_buckets(buckets: dict[str, Any]) -> dict[str, Any] | None:
    usage = {(k if k == "other" else f"{k}_tokens"): v for k, v in buckets.items()}
    return usage or None


def _usd(amounts: dict[str, Any]) -> dict[str, Any]:
    # Summing exclusive parts leaves float dust such as 0.0021000000000000003; no price is
    # that precise.
    return {
        key: _usd(value) if isinstance(value, dict) else round(value, _COST_DECIMALS)
        for key, value in amounts.items()
    }
