"""Normalisation of the token-usage shapes providers report into the contract's `Usage` buckets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

USAGE_FIELDS = frozenset(
    {
        "input_tokens",
        "input_cache_read_tokens",
        "input_cache_creation_tokens",
        "input_audio_tokens",
        "output_tokens",
        "output_reasoning_tokens",
        "output_audio_tokens",
        "total_tokens",
    }
)
_DETAIL_KEYS = {
    ("prompt_tokens_details", "cached_tokens"): "input_cache_read_tokens",
    ("prompt_tokens_details", "audio_tokens"): "input_audio_tokens",
    ("input_tokens_details", "cached_tokens"): "input_cache_read_tokens",
    ("completion_tokens_details", "reasoning_tokens"): "output_reasoning_tokens",
    ("completion_tokens_details", "audio_tokens"): "output_audio_tokens",
    ("output_tokens_details", "reasoning_tokens"): "output_reasoning_tokens",
}
_ALIASES = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}
_ANTHROPIC_CACHE = {
    "cache_read_input_tokens": "input_cache_read_tokens",
    "cache_creation_input_tokens": "input_cache_creation_tokens",
}


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def normalize_usage(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Map OpenAI (chat and responses), Anthropic or tracebus-shaped usage to `Usage` buckets.

    Anthropic reports `input_tokens` without cache tokens; they are added here so that
    `input_tokens` is inclusive, as the contract defines it. Unknown counters go to `other`."""
    if USAGE_FIELDS.issuperset(raw):
        return {key: value for key, value in raw.items() if value is not None}
    usage: dict[str, Any] = {}
    other: dict[str, int] = {}
    for key, value in raw.items():
        if key == "other" and isinstance(value, Mapping):
            other.update({k: c for k, v in value.items() if (c := _count(v)) is not None})
            continue
        if isinstance(value, Mapping):
            for detail, amount in value.items():
                target = _DETAIL_KEYS.get((key, detail))
                count = _count(amount)
                if count is not None:
                    if target:
                        usage[target] = count
                    else:
                        other[f"{key}.{detail}"] = count
            continue
        count = _count(value)
        if count is None:
            continue
        if key in USAGE_FIELDS:
            usage[key] = count
        elif key in _ALIASES:
            usage[_ALIASES[key]] = count
        elif key in _ANTHROPIC_CACHE:
            usage[_ANTHROPIC_CACHE[key]] = count
        else:
            other[key] = count
    if any(key in raw for key in _ANTHROPIC_CACHE):
        usage["input_tokens"] = (
            usage.get("input_tokens", 0)
            + usage.get("input_cache_read_tokens", 0)
            + usage.get("input_cache_creation_tokens", 0)
        )
    if "total_tokens" not in usage and ("input_tokens" in usage or "output_tokens" in usage):
        usage["total_tokens"] = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
    if other:
        usage["other"] = other
    return usage
