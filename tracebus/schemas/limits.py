"""Size limits on events: oversized fields are cut with a visible marker, never dropped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

TRUNCATABLE_FIELDS = ("input", "output", "metadata", "status_message")
TRUNCATION_MARKER = "…[truncated by tracebus: {original} bytes]"
_MARKER_ROOM = 96


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes in bytes of serialised JSON.

    The event limit stays below Kafka's default 1 MiB record size so that one event always fits
    into a record with its envelope."""

    max_field_bytes: int = 256 * 1024
    max_event_bytes: int = 900 * 1024

    def __post_init__(self) -> None:
        if self.max_field_bytes < _MARKER_ROOM * 2:
            raise ValueError(f"max_field_bytes must be at least {_MARKER_ROOM * 2}")
        if self.max_event_bytes < self.max_field_bytes:
            raise ValueError("max_event_bytes must be at least max_field_bytes")


class EventTooLarge(ValueError):
    """An event whose fixed (non-truncatable) fields alone exceed the event size limit."""


def _truncated(field: str, raw: bytes, keep: int) -> Any:
    prefix = raw[: max(keep - _MARKER_ROOM, 0)].decode("utf-8", "ignore")
    text = prefix + TRUNCATION_MARKER.format(original=len(raw))
    # metadata must stay a JSON object; the other fields may become a string.
    return {"tracebus.truncated": text} if field == "metadata" else text


def serialize_event(
    event: dict[str, Any], limits: Limits, default: Callable[[Any], Any] | None = None
) -> bytes:
    """Serialise one event dict with orjson, cutting fields over the limits.

    Each cut is recorded in the event's `truncated` list; a field that cannot be serialised at
    all (a reference cycle, say) is replaced by a note saying why. Mutates `event` only then."""
    try:
        data = orjson.dumps(event, default=default)
    except orjson.JSONEncodeError:
        data = _replace_unserialisable(event, default)
    if len(data) <= limits.max_field_bytes:
        return data
    sizes = {
        field: orjson.dumps(event[field], default=default)
        for field in TRUNCATABLE_FIELDS
        if event.get(field) is not None
    }
    budgets = {
        f: limits.max_field_bytes for f, raw in sizes.items() if len(raw) > limits.max_field_bytes
    }
    overflow = (
        len(data) - limits.max_event_bytes - sum(len(sizes[f]) - b for f, b in budgets.items())
    )
    if overflow > 0:
        # Still too big with every field within its limit: take the rest from the largest fields.
        for field in sorted(
            sizes, key=lambda f: -min(len(sizes[f]), budgets.get(f, len(sizes[f])))
        ):
            current = budgets.get(field, len(sizes[field]))
            cut = min(overflow + _MARKER_ROOM, current - _MARKER_ROOM)
            if cut <= 0:
                continue
            budgets[field] = current - cut
            overflow -= cut - _MARKER_ROOM
            if overflow <= 0:
                break
    if budgets:
        data = _apply_truncation(event, sizes, budgets, default)
    if len(data) > limits.max_event_bytes:
        raise EventTooLarge(
            f"event is {len(data)} bytes after truncating {sorted(budgets) or 'nothing'}; "
            f"the limit is {limits.max_event_bytes} bytes"
        )
    return data


def _replace_unserialisable(event: dict[str, Any], default: Callable[[Any], Any] | None) -> bytes:
    for field in TRUNCATABLE_FIELDS:
        try:
            orjson.dumps(event.get(field), default=default)
        except orjson.JSONEncodeError as error:
            note = f"<not serialisable by tracebus: {error}>"
            event[field] = {"tracebus.unserialisable": note} if field == "metadata" else note
    return orjson.dumps(event, default=default)


def _apply_truncation(
    event: dict[str, Any],
    sizes: dict[str, bytes],
    budgets: dict[str, int],
    default: Callable[[Any], Any] | None,
) -> bytes:
    records = list(event.get("truncated") or [])
    for field, keep in budgets.items():
        raw = sizes[field]
        event[field] = _truncated(field, raw, keep)
        records.append(
            {"field": field, "original_bytes": len(raw), "kept_bytes": max(keep - _MARKER_ROOM, 0)}
        )
    event["truncated"] = records
    return orjson.dumps(event, default=default)
