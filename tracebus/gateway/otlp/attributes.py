"""OTLP attributes as plain JSON values, and the attribute bag a span is read from."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def attribute_values(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP attributes as plain JSON values."""
    return {kv.key: plain_value(kv.value) for kv in key_values}


# The kinds whose protobuf value already is its JSON value: most attributes, so checked first.
_PLAIN_KINDS = frozenset({"string_value", "int_value", "bool_value"})


def plain_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind in _PLAIN_KINDS:
        return getattr(value, kind)
    if kind is None:
        return None
    if kind == "array_value":
        return [plain_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attribute_values(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)  # JSON has no NaN or infinity; Langfuse keeps the text
    return getattr(value, kind)


def decoded(value: Any) -> Any:
    """A string decoded as JSON when it is JSON; anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def parse_json_text(value: Any) -> Any:
    """A JSON object or array sent as text, decoded; anything else as it is (a plain string
    stays a string even when it happens to parse as a number)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        return decoded(value)
    return value


@dataclass
class Attributes:
    """A span's attributes, remembering which were read so the rest can go to metadata."""

    values: dict[str, Any]
    used: set[str] = field(default_factory=set)

    def first(self, *keys: str) -> tuple[str, Any] | None:
        """The first key with a non-empty value, and that value."""
        for key in keys:
            value = self.values.get(key)
            if value is not None and value != "" and value != []:
                self.used.add(key)
                return key, value
        return None

    def get(self, *keys: str) -> Any:
        # The same loop as `first`, without building a pair: read ~20 times per span.
        values = self.values
        for key in keys:
            value = values.get(key)
            if value is not None and value != "" and value != []:
                self.used.add(key)
                return value
        return None

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """Values of keys starting with `prefix`, keyed by the rest of the key."""
        found: dict[str, Any] = {}
        for key, value in self.values.items():
            if key.startswith(prefix):
                found[key[len(prefix) :]] = value
                self.used.add(key)
        return found

    def discard(self, keys: Iterable[str]) -> None:
        self.used.update(keys)

    def remaining(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k not in self.used}
