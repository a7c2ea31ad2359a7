"""What every event made from spans shares: short text fields and content-derived ids.

Event ids are derived from the event's content, so an exporter that retries a request produces
the same ids and the stream applies the events once; a changed span gets a new id and, being
newer, replaces the earlier snapshot."""

from __future__ import annotations

import hashlib
from typing import Any

from tracebus.gateway.json_values import canonical_json, json_text

_SHORT_TEXT = 1000
_EVENT_ID_PREFIX = "otlp"


def short_text(value: Any) -> str | None:
    """Text for a short field (1–1000 characters): non-strings as JSON, longer text cut."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json_text(value)
    return text[:_SHORT_TEXT] or None


def with_event_id(event: dict[str, Any], subject: str) -> dict[str, Any]:
    """`event`, given an id that depends only on its content: `otlp:<subject>:<digest>`. Sets
    the id in place (callers pass an event they have just built) to spare a copy per event."""
    digest = hashlib.sha256(canonical_json(event)).hexdigest()
    room = 64 - len(_EVENT_ID_PREFIX) - len(subject) - 2
    event["event_id"] = f"{_EVENT_ID_PREFIX}:{subject}:{digest[:room]}"
    return event
