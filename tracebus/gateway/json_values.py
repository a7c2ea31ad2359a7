"""Checks and conversions of JSON values that every protocol adapter makes on its way to
contract events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson


def is_number(value: Any) -> bool:
    """Whether `value` is a JSON number (a bool, though an int in Python, is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def json_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`value` as JSON text (`default` converts what JSON has no type for)."""
    return orjson.dumps(value, default=default).decode()


def as_scalar(value: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """A scalar as it is, a list or object as its JSON text: the contract's model parameters
    are scalars."""
    return value if is_scalar(value) else json_text(value, default)


def canonical_json(value: Any) -> bytes:
    """`value` as JSON with sorted keys, the same bytes for the same content: what
    content-derived event ids hash."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def without_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` without the ones that are not set (None)."""
    return {key: value for key, value in fields.items() if value is not None}
