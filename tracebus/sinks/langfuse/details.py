"""Token usage and cost in Langfuse's exclusive buckets.

tracebus buckets are inclusive (`input_tokens` counts cache reads, cache creation and audio);
Langfuse prices every usage key separately, so its `input` must exclude the parts reported under
their own keys, or those tokens would be paid twice. Cost keys mirror the usage keys, as in the
cost details Langfuse computes itself."""

from __future__ import annotations

from typing import TypeVar

from tracebus.schemas import Cost, Usage

Amount = TypeVar("Amount", int, float)

INPUT = "input"
OUTPUT = "output"
TOTAL = "total"
INPUT_CACHED = "input_cached_tokens"
INPUT_CACHE_CREATION = "input_cache_creation"
INPUT_AUDIO = "input_audio_tokens"
OUTPUT_REASONING = "output_reasoning_tokens"
OUTPUT_AUDIO = "output_audio_tokens"

# Float subtraction leaves dust such as 0.0019999999999999996; no price is that precise.
_COST_DECIMALS = 12


def usage_details(usage: Usage) -> dict[str, int]:
    """Exclusive token buckets; `total` is the reported total, else input + output tokens."""
    input_parts = {
        INPUT_CACHED: usage.input_cache_read_tokens,
        INPUT_CACHE_CREATION: usage.input_cache_creation_tokens,
        INPUT_AUDIO: usage.input_audio_tokens,
    }
    output_parts = {
        OUTPUT_REASONING: usage.output_reasoning_tokens,
        OUTPUT_AUDIO: usage.output_audio_tokens,
    }
    details: dict[str, int] = {}
    if usage.input_tokens is not None:
        details[INPUT] = max(usage.input_tokens - _sum(input_parts), 0)
    if usage.output_tokens is not None:
        details[OUTPUT] = max(usage.output_tokens - _sum(output_parts), 0)
    details.update(_present(input_parts))
    details.update(_present(output_parts))
    if usage.total_tokens is not None:
        details[TOTAL] = usage.total_tokens
    elif details:
        details[TOTAL] = _whole(usage.input_tokens, input_parts) + _whole(
            usage.output_tokens, output_parts
        )
    for key, count in (usage.other or {}).items():
        details.setdefault(key, count)  # a provider bucket never overrides a Langfuse one
    return details


def cost_details(cost: Cost) -> dict[str, float]:
    """Exclusive cost buckets in USD, always with `total`: the reported total, else input +
    output (the contract counts `other` costs in no total, so neither does this)."""
    input_parts = {
        INPUT_CACHED: cost.input_cache_read,
        INPUT_CACHE_CREATION: cost.input_cache_creation,
        INPUT_AUDIO: cost.input_audio,
    }
    output_parts = {OUTPUT_REASONING: cost.output_reasoning, OUTPUT_AUDIO: cost.output_audio}
    details: dict[str, float] = {}
    if cost.input is not None:
        details[INPUT] = _usd(max(cost.input - _sum(input_parts), 0.0))
    if cost.output is not None:
        details[OUTPUT] = _usd(max(cost.output - _sum(output_parts), 0.0))
    details.update(_present(input_parts))
    details.update(_present(output_parts))
    for key, usd in (cost.other or {}).items():
        details.setdefault(key, usd)
    if not details and cost.total is None:
        return {}
    # Langfuse derives a total only when input and output are the sole keys; always send it.
    if cost.total is not None:
        details[TOTAL] = cost.total
    else:
        details[TOTAL] = _usd(_whole(cost.input, input_parts) + _whole(cost.output, output_parts))
    return details


def _present(parts: dict[str, Amount | None]) -> dict[str, Amount]:
    return {key: value for key, value in parts.items() if value is not None}


def _sum(parts: dict[str, Amount | None]) -> Amount:
    return sum(_present(parts).values())


def _whole(inclusive: Amount | None, parts: dict[str, Amount | None]) -> Amount:
    """The inclusive amount, or the sum of its parts when only those were reported."""
    return inclusive if inclusive is not None else _sum(parts)


def _usd(amount: float) -> float:
    return round(amount, _COST_DECIMALS)
