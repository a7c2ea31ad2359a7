"""Usage and cost of a generation body as the contract's inclusive buckets.

Langfuse keys are exclusive (`input` excludes `input_cached_tokens`) and the parts are summed
into the contract's inclusive buckets, the way Langfuse itself totals input and output;
OpenAI-shaped `usageDetails` are first read as Langfuse reads them. Counts in a unit other than
tokens (Dify's suggested questions count characters) go to `other` with the unit in the key."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from tracebus.gateway.json_values import is_number
from tracebus.gateway.langfuse.validation import Fields
from tracebus.sinks.langfuse.details import (
    INPUT_AUDIO,
    INPUT_CACHE_CREATION,
    INPUT_CACHED,
    OUTPUT_AUDIO,
    OUTPUT_REASONING,
)

_UNITS = ("CHARACTERS", "TOKENS", "SECONDS", "MILLISECONDS", "IMAGES", "REQUESTS")
_LEADING_INT = re.compile(r"^\s*([+-]?\d+)")
# Langfuse's exclusive keys for the parts the contract has buckets for, with the names its
# integrations use besides the ones tracebus's Langfuse sink writes.
_USAGE_PARTS = {
    INPUT_CACHED: "input_cache_read_tokens",
    "input_cache_read": "input_cache_read_tokens",
    "input_cache_read_tokens": "input_cache_read_tokens",
    "cache_read_input_tokens": "input_cache_read_tokens",
    INPUT_CACHE_CREATION: "input_cache_creation_tokens",
    "input_cache_creation_tokens": "input_cache_creation_tokens",
    "input_cache_write": "input_cache_creation_tokens",
    "cache_creation_input_tokens": "input_cache_creation_tokens",
    INPUT_AUDIO: "input_audio_tokens",
    "input_audio": "input_audio_tokens",
    OUTPUT_REASONING: "output_reasoning_tokens",
    "output_reasoning": "output_reasoning_tokens",
    OUTPUT_AUDIO: "output_audio_tokens",
    "output_audio": "output_audio_tokens",
}
# Anthropic's names for cache tokens, which Langfuse's Anthropic users send beside `input`.
_INPUT_KEYS_WITHOUT_PREFIX = ("cache_read_input_tokens", "cache_creation_input_tokens")
_OPENAI_COMPLETION = ("prompt_tokens", "completion_tokens", "total_tokens")
_OPENAI_RESPONSE = ("input_tokens", "output_tokens", "total_tokens")
_OPENAI_DETAILS = {
    "prompt_tokens_details": "input",
    "completion_tokens_details": "output",
    "input_tokens_details": "input",
    "output_tokens_details": "output",
}
_TOKEN_NAMES = ("input_tokens", "output_tokens", "total_tokens")
_COST_NAMES = ("input", "output", "total")
_COST_PARTS = {key: name.removesuffix("_tokens") for key, name in _USAGE_PARTS.items()}


def usage_and_cost(fields: Fields) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The contract's usage and cost of a generation body (`usage`, `usageDetails`,
    `costDetails`), merged as Langfuse's worker merges them: details override `usage`."""
    details: dict[str, float] = {}
    costs: dict[str, float] = {}
    other_units: dict[str, int] = {}
    if (usage := fields.mapping("usage")) is not None:
        counts = Fields(usage, fields.issues, fields.at("usage"))
        read = {key: counts.integer(key) for key in _COST_NAMES}
        openai = [
            counts.integer(key) for key in ("promptTokens", "completionTokens", "totalTokens")
        ]
        unit = counts.choice("unit", _UNITS)
        # Langfuse reads `usage` in OpenAI's camel-case names as tokens.
        if any(key in usage for key in ("promptTokens", "completionTokens", "totalTokens")):
            read = dict(zip(_COST_NAMES, openai, strict=True))
            unit = "TOKENS"
        present = {key: count for key, count in read.items() if count is not None}
        if unit in (None, "TOKENS"):
            details.update(present)
        else:
            other_units.update({f"{key}_{unit.lower()}": n for key, n in present.items()})
        for key, target in zip(("inputCost", "outputCost", "totalCost"), _COST_NAMES, strict=True):
            if (usd := counts.number(key)) is not None:
                costs[target] = usd
    if (raw_details := fields.body.get("usageDetails")) is not None:
        if not isinstance(raw_details, dict):
            fields.issues.add(fields.at("usageDetails"), "Invalid input", "invalid_union")
        elif _openai_shape(raw_details):
            details.update(_exclusive_openai(raw_details))
        else:
            details.update({k: c for k, v in raw_details.items() if (c := _count(v)) is not None})
    for key, value in (fields.mapping("costDetails") or {}).items():
        # Langfuse keeps only non-negative numbers of costDetails.
        if is_number(value) and value >= 0:
            costs[key] = float(value)
    usage_result = _inclusive(details, _TOKEN_NAMES, _USAGE_PARTS, int) if details else {}
    if other_units:
        usage_result["other"] = {**usage_result.get("other", {}), **other_units}
    cost_result = _inclusive(costs, _COST_NAMES, _COST_PARTS, float) if costs else None
    return usage_result or None, cost_result


def _openai_shape(details: Mapping[str, Any]) -> bool:
    """Whether `usageDetails` is an OpenAI usage object (chat completions or responses), which
    Langfuse reads with its own schema rather than as raw keys."""
    keys = set(details)
    if keys & {"prompt_tokens", "completion_tokens", *_OPENAI_DETAILS}:
        return True
    return keys.issuperset(_OPENAI_RESPONSE) and keys <= {*_OPENAI_RESPONSE, *_OPENAI_DETAILS}


def _count(value: Any) -> int | None:
    """A raw usage value as Langfuse keeps it: a non-negative integer, or a string parsed the
    way JavaScript's parseInt does; anything else is dropped."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value >= 0 and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and (match := _LEADING_INT.match(value)):
        number = int(match.group(1))
        return number if number >= 0 else None
    return None


def _exclusive_openai(details: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI usage in Langfuse's exclusive keys: `input` minus its detailed parts, each part as
    `input_<name>` (likewise output), as Langfuse converts it."""
    result: dict[str, int] = {}
    for key, target in (
        ("prompt_tokens", "input"),
        ("input_tokens", "input"),
        ("completion_tokens", "output"),
        ("output_tokens", "output"),
        ("total_tokens", "total"),
    ):
        if (count := _count(details.get(key))) is not None:
            result[target] = count
    for key, side in _OPENAI_DETAILS.items():
        parts = details.get(key)
        if not isinstance(parts, dict):
            continue
        for name, value in parts.items():
            if (count := _count(value)) is not None:
                result[f"{side}_{name}"] = count
                result[side] = max(result.get(side, 0) - count, 0)
    for key, value in details.items():
        known = key in _OPENAI_COMPLETION or key in _OPENAI_RESPONSE or key in _OPENAI_DETAILS
        if not known and (count := _count(value)) is not None:
            result[key] = count
    return result


def _inclusive(
    details: Mapping[str, float],
    names: tuple[str, str, str],
    parts: Mapping[str, str],
    amount: Callable[[float], Any],
) -> dict[str, Any]:
    """Exclusive Langfuse buckets as the contract's inclusive ones, named `names` (input,
    output, total): input is `input` plus every `input_*` key (and Anthropic's cache keys), as
    Langfuse totals it, output likewise, total the reported one else their sum; keys of neither
    side go to `other`."""
    input_name, output_name, total_name = names
    result: dict[str, Any] = {}
    sides: dict[str, float] = {}
    other: dict[str, Any] = {}
    for key, value in details.items():
        if key == "total":
            continue
        side = input_name if key in _INPUT_KEYS_WITHOUT_PREFIX else None
        side = side or {"input": input_name, "output": output_name}.get(key.split("_", 1)[0])
        if side is None:
            other[key] = amount(value)
            continue
        sides[side] = sides.get(side, 0) + value
        if key in parts:
            result[parts[key]] = amount(result.get(parts[key], 0) + value)
    result.update({side: amount(value) for side, value in sides.items()})
    if "total" in details:
        result[total_name] = amount(details["total"])
    elif sides:
        result[total_name] = amount(sum(sides.values()))
    if other:
        result["other"] = other
    return result
