"""LangSmith's UsageMetadata as the contract's usage and cost, and where LangChain leaves it."""

from __future__ import annotations

from typing import Any

from tracebus.gateway.json_values import is_number
from tracebus.gateway.langsmith.checks import Json, invalid

_INPUT_TOKEN_DETAILS = {
    "cache_read": "input_cache_read_tokens",
    "cache_creation": "input_cache_creation_tokens",
    "audio": "input_audio_tokens",
}
_OUTPUT_TOKEN_DETAILS = {"reasoning": "output_reasoning_tokens", "audio": "output_audio_tokens"}
_INPUT_COST_DETAILS = {
    "cache_read": "input_cache_read",
    "cache_creation": "input_cache_creation",
    "audio": "input_audio",
}
_OUTPUT_COST_DETAILS = {"reasoning": "output_reasoning", "audio": "output_audio"}
_TOKEN_KEYS = frozenset({"input_tokens", "output_tokens", "total_tokens"})
_COST_KEYS = {"input_cost": "input", "output_cost": "output", "total_cost": "total"}


def usage_and_cost(usage_metadata: Any, label: str) -> tuple[Json | None, Json | None]:
    """LangSmith's UsageMetadata as the contract's Usage and Cost: both count inclusively
    (input_tokens includes the cache and audio details), so the numbers carry over. Detail
    keys the contract has no bucket for go to `other` under their LangSmith path."""
    if not isinstance(usage_metadata, dict):
        raise invalid(f"{label}: usage_metadata must be an object")
    usage: Json = {}
    cost: Json = {}
    usage_other: Json = {}
    cost_other: Json = {}
    for key, value in usage_metadata.items():
        where = f"{label}: usage_metadata.{key}"
        if key in _TOKEN_KEYS:
            usage[key] = _tokens(value, where)
        elif key in _COST_KEYS:
            cost[_COST_KEYS[key]] = _usd(value, where)
        elif isinstance(value, dict):
            buckets = {
                "input_token_details": (_INPUT_TOKEN_DETAILS, usage, usage_other, _tokens),
                "output_token_details": (_OUTPUT_TOKEN_DETAILS, usage, usage_other, _tokens),
                "input_cost_details": (_INPUT_COST_DETAILS, cost, cost_other, _usd),
                "output_cost_details": (_OUTPUT_COST_DETAILS, cost, cost_other, _usd),
            }
            names, target, other, number = buckets.get(key, ({}, usage, usage_other, _tokens))
            for detail, amount in value.items():
                if amount is None:
                    continue
                counted = number(amount, f"{where}.{detail}")
                if detail in names:
                    target[names[detail]] = counted
                else:
                    other[f"{key}.{detail}"] = counted
        elif value is not None:
            usage_other[key] = _tokens(value, where)
    if "total_tokens" not in usage and ("input_tokens" in usage or "output_tokens" in usage):
        usage["total_tokens"] = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
    if usage_other:
        usage["other"] = usage_other
    if cost_other:
        cost["other"] = cost_other
    return usage or None, cost or None


def _tokens(value: Any, where: str) -> int:
    if not is_number(value) or value < 0:
        raise invalid(f"{where} must be a non-negative number, not {value!r}")
    return round(value)


def _usd(value: Any, where: str) -> float:
    if not is_number(value) or value < 0:
        raise invalid(f"{where} must be a non-negative number, not {value!r}")
    return float(value)


def generation_usage(outputs: Json) -> Any:
    """LangChain's tracer leaves an LLM run's usage in its serialised chat message
    (`generations[i][j].message.kwargs.usage_metadata`), where LangSmith's server finds it."""
    for batch in outputs.get("generations") or ():
        for generation in batch if isinstance(batch, list) else ():
            message = generation.get("message") if isinstance(generation, dict) else None
            kwargs = message.get("kwargs") if isinstance(message, dict) else None
            if isinstance(kwargs, dict) and kwargs.get("usage_metadata") is not None:
                return kwargs["usage_metadata"]
    return None
