"""Validation in Langfuse's terms: each problem of an event is an issue shaped like the zod
issues Langfuse's 207 errors carry (code, path, message), and a field reader types an event's
fields as Langfuse's schemas do."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from tracebus.gateway.json_values import is_number
from tracebus.gateway.timestamps import fraction_nanos

_ID_MAX_LENGTH = 800

# zod's `z.iso.datetime({offset: true})`: seconds optional, any fraction, Z or ±HH:MM.
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(?:(Z)|([+-])(\d{2}):(\d{2}))"
)


class Issues:
    """Problems found in one event, each as a zod issue (code, path, message)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(
        self, path: Iterable[str | int], message: str, code: str = "custom", **extra: Any
    ) -> None:
        self.items.append({"code": code, **extra, "path": list(path), "message": message})

    def expected(self, path: Iterable[str | int], expected: str, value: Any) -> None:
        received = js_type(value)
        self.add(
            path,
            f"Invalid input: expected {expected}, received {received}",
            "invalid_type",
            expected=expected,
        )

    def too_small(self, path: Iterable[str | int]) -> None:
        """An empty string where zod's `.min(1)` wants a character."""
        self.add(path, "Too small: expected string to have >=1 characters", "too_small", minimum=1)

    def render(self) -> str:
        return orjson.dumps(self.items, option=orjson.OPT_INDENT_2).decode()


def js_type(value: Any) -> str:
    """The JavaScript type zod names for a JSON value."""
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class Fields:
    """Reads the fields of one event body as Langfuse's schemas type them; every mismatch is an
    issue, and the reader returns None for it so that all issues are collected at once."""

    def __init__(
        self, body: Mapping[str, Any], issues: Issues, path: tuple[str, ...] = ("body",)
    ) -> None:
        self.body = body
        self.issues = issues
        self.path = path

    def _get(self, key: str) -> Any:
        return self.body.get(key)

    def at(self, key: str) -> tuple[str, ...]:
        return (*self.path, key)

    def string(self, key: str, *, max_length: int | None = None) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.issues.expected(self.at(key), "string", value)
            return None
        if max_length is not None and len(value) > max_length:
            self.issues.add(
                self.at(key),
                f"Too big: expected string to have <={max_length} characters",
                "too_big",
                origin="string",
                maximum=max_length,
            )
            return None
        return value

    def identifier(self, key: str, *, required: bool = False) -> str | None:
        """Langfuse's idSchema: 1 to 800 characters, no carriage return."""
        value = self._get(key)
        if value is None:
            if required:
                self.issues.expected(self.at(key), "string", value)
            return None
        text = self.string(key, max_length=_ID_MAX_LENGTH)
        if text is None:
            return None
        if not text:
            self.issues.too_small(self.at(key))
            return None
        if "\r" in text:
            self.issues.add(self.at(key), "ID cannot contain carriage return characters")
            return None
        return text

    def time(self, key: str) -> int | None:
        text = self.string(key)
        if text is None:
            return None
        nanos = parse_timestamp(text)
        if nanos is None:
            self.issues.add(
                self.at(key), "Invalid ISO datetime", "invalid_format", format="datetime"
            )
        return nanos

    def choice(self, key: str, options: tuple[str, ...], *, required: bool = False) -> str | None:
        value = self._get(key)
        if value is None and not required:
            return None
        if value not in options:
            listed = "|".join(f'"{o}"' for o in options)
            self.issues.add(
                self.at(key),
                f"Invalid option: expected one of {listed}",
                "invalid_value",
                values=list(options),
            )
            return None
        return str(value)

    def integer(self, key: str) -> int | None:
        value = self._number(key)
        if isinstance(value, float) and not value.is_integer():
            self.issues.expected(self.at(key), "int", value)
            return None
        return None if value is None else int(value)

    def number(self, key: str) -> float | None:
        value = self._number(key)
        return None if value is None else float(value)

    def _number(self, key: str) -> int | float | None:
        value = self._get(key)
        if value is None:
            return None
        if not is_number(value):
            self.issues.expected(self.at(key), "number", value)
            return None
        return value

    def boolean(self, key: str) -> bool | None:
        value = self._get(key)
        if value is None or isinstance(value, bool):
            return value
        self.issues.expected(self.at(key), "boolean", value)
        return None

    def mapping(self, key: str) -> Mapping[str, Any] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.issues.expected(self.at(key), "object", value)
            return None
        return value


_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


def parse_timestamp(text: str) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 datetime with offset, as zod accepts it;
    None when it is not one."""
    match = _DATETIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        return None
    if not zulu and (int(off_h) > 23 or int(off_m) > 59):
        return None
    # Seconds since the epoch in integer arithmetic (what calendar.timegm does, more slowly).
    days = moment.toordinal() - _EPOCH_ORDINAL
    seconds = days * 86400 + moment.hour * 3600 + moment.minute * 60 + moment.second
    if not zulu:
        offset = int(off_h) * 3600 + int(off_m) * 60
        seconds -= offset if sign == "+" else -offset
    return seconds * 1_000_000_000 + fraction_nanos(fraction)
