"""Usage and cost of a generation body as the contract's inclusive buckets.

The legacy `usage` object (OpenAI's camel-case names, units, costs) is read here;
`usageDetails` and `costDetails` go through the conversion every Langfuse endpoint shares
(`tracebus.gateway.langfuse_details`). Counts in a unit other than tokens (Dify's suggested
questions count characters) go to `other` with the unit in the key."""

from __future__ import annotations

from typing import Any

from tracebus.gateway.langfuse.validation import Fields
from tracebus.gateway.langfuse_details import (
    cost_details,
    inclusive_cost,
    inclusive_usage,
    usage_details,
)

_UNITS = ("CHARACTERS", "TOKENS", "SECONDS", "MILLISECONDS", "IMAGES", "REQUESTS")
_NAMES = ("input", "output", "total")


def usage_and_cost(fields: Fields) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The contract's usage and cost of a generation body (`usage`, `usageDetails`,
    `costDetails`), merged as Langfuse's worker merges them: details override `usage`."""
    details: dict[str, int] = {}
    costs: dict[str, float] = {}
    other_units: dict[str, int] = {}
    if (usage := fields.mapping("usage")) is not None:
        counts = Fields(usage, fields.issues, fields.at("usage"))
        read = {key: counts.integer(key) for key in _NAMES}
        openai = [
            counts.integer(key) for key in ("promptTokens", "completionTokens", "totalTokens")
        ]
        unit = counts.choice("unit", _UNITS)
        # Langfuse reads `usage` in OpenAI's camel-case names as tokens.
        if any(key in usage for key in ("promptTokens", "completionTokens", "totalTokens")):
            read = dict(zip(_NAMES, openai, strict=True))
            unit = "TOKENS"
        present = {key: count for key, count in read.items() if count is not None}
        if unit in (None, "TOKENS"):
            details.update(present)
        else:
            other_units.update({f"{key}_{unit.lower()}": n for key, n in present.items()})
        for key, target in zip(("inputCost", "outputCost", "totalCost"), _NAMES, strict=True):
            if (usd := counts.number(key)) is not None:
                costs[target] = usd
    if (raw_details := fields.body.get("usageDetails")) is not None:
        if not isinstance(raw_details, dict):
            fields.issues.add(fields.at("usageDetails"), "Invalid input", "invalid_union")
        else:
            details.update(usage_details(raw_details))
    costs.update(cost_details(fields.mapping("costDetails") or {}))
    usage_result = inclusive_usage(details)
    if other_units:
        usage_result["other"] = {**usage_result.get("other", {}), **other_units}
    return usage_result or None, inclusive_cost(costs) or None
