"""One `trace` event per trace and request, from the trace-level attributes its spans carry
(Langfuse SDKs copy them onto every span)."""

from __future__ import annotations

from typing import Any

from tracebus.gateway.json_values import without_none
from tracebus.gateway.otlp.events import with_event_id
from tracebus.schemas import SCHEMA_VERSION


class TraceAttributes:
    """The trace-level attributes the spans of one trace carry in one request, merged: later
    spans win for single values, tags accumulate, metadata merges key by key."""

    def __init__(self, trace_id: str, where: str) -> None:
        self.trace_id = trace_id
        self.where = where
        self.fields: dict[str, Any] = {}
        self.timestamp = 0

    def add(self, fields: dict[str, Any], timestamp: int) -> None:
        if not fields:
            return
        self.timestamp = max(self.timestamp, timestamp)
        for key, value in fields.items():
            if key == "tags":
                self.fields["tags"] = list(dict.fromkeys([*self.fields.get("tags", []), *value]))
            elif key == "metadata":
                self.fields["metadata"] = {**self.fields.get("metadata", {}), **value}
            else:
                self.fields[key] = value

    def event(self) -> dict[str, Any] | None:
        fields = dict(self.fields)
        root_name = fields.pop("root_name", None)
        if not fields and root_name is None:
            return None
        fields.setdefault("name", root_name)  # Langfuse names a trace after its root span
        event = {
            "schema_version": SCHEMA_VERSION,
            "type": "trace",
            "trace_id": self.trace_id,
            "timestamp_unix_nano": self.timestamp,
            **without_none(fields),
        }
        return with_event_id(event, self.trace_id)
