"""Langfuse's usage and cost details as the contract's inclusive buckets, the same for every
endpoint Langfuse traffic arrives on (OTLP spans and the legacy batch ingestion): Langfuse's
server reads both with one schema, so a detail must land in the same bucket whichever way it
came.

Langfuse keeps details exclusive: every key is counted and priced on its own, so `input`
excludes the `input_cached_tokens` listed beside it. The contract's buckets are inclusive:
`input_tokens` counts every input key and the `input_*` buckets are parts of it (likewise
output). This is the reverse of what tracebus's Langfuse sink writes
(`tracebus.sinks.langfuse.details`), and reading what it wrote gives back the same buckets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from tracebus.gateway.json_values import is_number

Amount = TypeVar("Amount", int, float)

# JavaScript's parseInt, as Langfuse reads a usage value sent as a string: leading whitespace,
# a sign, then decimal digits; the rest of the string is ignored.
_LEADING_INT = re.compile(r"^\s*([+-]?[0-9]+)")
# The two OpenAI usage objects (chat completions, responses) Langfuse accepts as usage details:
# input, output and details keys; both have `total_tokens`.
_OPENAI_SHAPES = (
    ("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details"),
    ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details"),
)
# The parts of input and output the contract has buckets for, by the marks their keys carry in
# the names Langfuse, its SDKs and tracebus's sink use (`input_cached_tokens`,
# `input_cache_read`, `input_cache_creation_5m`, `input_cache_write`, `output_reasoning_tokens`…).
_PARTS = {
    "input": (
        (("cache_read", "cached"), "input_cache_read"),
        (("cache_creation", "cache_write"), "input_cache_creation"),
        (("audio",), "input_audio"),
    ),
    "output": ((("reasoning",), "output_reasoning"), (("audio",), "output_audio")),
}
# Anthropic's names for cache tokens, which Langfuse's Anthropic users send beside `input`.
_ANTHROPIC_INPUT = {
    "cache_read_input_tokens": "input_cache_read",
    "cache_creation_input_tokens": "input_cache_creation",
}
# Summing exclusive parts leaves float dust such as 0.0021000000000000003; no price is that
# precise (the sink rounds the same way).
_COST_DECIMALS = 12


def usage_count(value: Any) -> int | None:
    """A raw usage value as Langfuse keeps it: a non-negative whole JSON number, or a string
    read the way JavaScript's parseInt reads it; anything else is dropped (None)."""
    if isinstance(value, str):
        match = _LEADING_INT.match(value)
        count = int(match.group(1)) if match else -1
        return count if count >= 0 else None
    return _whole(value)


def usage_details(raw: Mapping[str, Any]) -> dict[str, int]:
    """Usage details as Langfuse's schema reads them: an OpenAI usage object converted to
    exclusive keys, else every key whose value is a count (`usage_count`)."""
    openai = _openai_details(raw)
    if openai is not None:
        return openai
    return {key: count for key, value in raw.items() if (count := usage_count(value)) is not None}


def cost_details(raw: Mapping[str, Any]) -> dict[str, float]:
    """Cost details as Langfuse keeps them: non-negative JSON numbers, in USD."""
    return {key: float(v) for key, v in raw.items() if is_number(v) and v >= 0}


def inclusive_usage(details: Mapping[str, int]) -> dict[str, Any]:
    """Exclusive usage details as the contract's `Usage` fields."""
    return {
        key if key == "other" else f"{key}_tokens": count
        for key, count in _inclusive(details).items()
    }


def inclusive_cost(details: Mapping[str, float]) -> dict[str, Any]:
    """Exclusive cost details as the contract's `Cost` fields."""
    return {
        key: {k: _usd(v) for k, v in amount.items()} if key == "other" else _usd(amount)
        for key, amount in _inclusive(details).items()
    }


def _whole(value: Any) -> int | None:
    # A float such as 3.0 is whole too: JSON (and JavaScript) do not tell it from 3.
    if is_number(value) and value >= 0 and float(value).is_integer():
        return int(value)
    return None


def _openai_details(raw: Mapping[str, Any]) -> dict[str, int] | None:
    """An OpenAI usage object in Langfuse's exclusive keys, as Langfuse converts it: `input`
    is the prompt tokens minus each detail, which becomes `input_<name>` (likewise output).
    None unless `raw` is exactly such an object, as Langfuse's strict schema requires: only
    its keys, whole input, output and total counts, details objects of whole counts or nulls.
    Langfuse reads anything else as raw keys."""
    for input_key, output_key, input_parts, output_parts in _OPENAI_SHAPES:
        if not raw.keys() <= {input_key, output_key, "total_tokens", input_parts, output_parts}:
            continue
        sides = {"input": input_key, "output": output_key, "total": "total_tokens"}
        counts = {side: _whole(raw.get(key)) for side, key in sides.items()}
        parts = {
            "input": _part_counts(raw.get(input_parts)),
            "output": _part_counts(raw.get(output_parts)),
        }
        if None in counts.values() or None in parts.values():
            continue
        # (Every count is whole here; the filter is what tells the type checker so.)
        result = {side: count for side, count in counts.items() if count is not None}
        for side, side_parts in parts.items():
            for name, count in (side_parts or {}).items():
                result[f"{side}_{name}"] = count
                result[side] = max(result[side] - count, 0)
        return result
    return None


def _part_counts(value: Any) -> dict[str, int] | None:
    """The counts of an OpenAI details object, without its nulls; None when it is not an
    object of whole counts and nulls (Langfuse's schema then fails)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return None
    counts: dict[str, int] = {}
    for name, raw_count in value.items():
        if raw_count is None:
            continue
        if (count := _whole(raw_count)) is None:
            return None
        counts[name] = count
    return counts


def _place(key: str) -> tuple[str, str | None] | None:
    """Which side (input or output) one exclusive key counts in, and which part bucket, if
    any, it is; None for a key of neither side."""
    if key in _ANTHROPIC_INPUT:
        return "input", _ANTHROPIC_INPUT[key]
    side = next((s for s in _PARTS if key.startswith(s)), None)
    if side is None:
        return None
    rest = key[len(side) :]
    part = next((b for marks, b in _PARTS[side] if any(m in rest for m in marks)), None)
    return side, part


def _inclusive(details: Mapping[str, Amount]) -> dict[str, Any]:
    """Exclusive details as inclusive buckets (`input`, `input_cache_read`…, `total`,
    `other`): `input` sums every input key, as Langfuse totals input, output likewise; `total`
    is the reported one, else input + output; keys of neither side go to `other`."""
    buckets: dict[str, Any] = {}
    other: dict[str, Amount] = {}
    for key, amount in details.items():
        if key == "total":
            continue
        place = _place(key)
        if place is None:
            other[key] = amount
            continue
        side, part = place
        buckets[side] = buckets.get(side, 0) + amount
        if part is not None:
            buckets[part] = buckets.get(part, 0) + amount
    if "total" in details:
        buckets["total"] = details["total"]
    elif "input" in buckets or "output" in buckets:
        buckets["total"] = buckets.get("input", 0) + buckets.get("output", 0)
    if other:
        buckets["other"] = other
    return buckets


def _usd(amount: float) -> float:
    return round(amount, _COST_DECIMALS)
