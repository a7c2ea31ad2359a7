"""Checks of the values in runs and feedback. Like LangSmith, the gateway refuses a request
with 422 naming the first run or feedback it cannot take."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tracebus.gateway.json_values import is_number
from tracebus.gateway.protocol import GatewayError
from tracebus.gateway.timestamps import EPOCH, unix_nano

Json = dict[str, Any]


def invalid(message: str) -> GatewayError:
    return GatewayError(422, message)


def uuid_of(value: Any, label: str, key: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise invalid(f"{label}: {key} must be a UUID, got {value!r}")


def optional_uuid(value: Any, label: str, key: str) -> uuid.UUID | None:
    return None if value is None else uuid_of(value, label, key)


def json_object(value: Any, label: str, key: str) -> Json:
    """An optional JSON object (`{}` when absent)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{label}: {key} must be a JSON object")
    return value


def timestamp_ns(value: Any, label: str, key: str) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 time (naive = UTC: LangSmith's REST tutorial
    sends `datetime.utcnow().isoformat()`) or of epoch milliseconds (the JS SDK's numbers)."""
    if value is None:
        return None
    if is_number(value) and value >= 0:
        return round(value * 1_000_000)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            moment = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
            if moment >= EPOCH:
                return unix_nano(moment)
    raise invalid(f"{label}: {key} must be an ISO 8601 timestamp, got {value!r}")
