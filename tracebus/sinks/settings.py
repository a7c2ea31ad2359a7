"""Sink worker configuration: arguments first, then `TRACEBUS_*` environment variables."""

from __future__ import annotations

from pydantic import Field

from tracebus.config import GroupSettings


class SinkSettings(GroupSettings):
    group_id: str | None = Field(
        None, description="Consumer group; default tracebus-sink-<destination>."
    )
    batch_max_traces: int = Field(100, ge=1, description="Trace documents per request.")
    batch_max_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Bytes per request.")
    linger_ms: float = Field(200.0, ge=0, description="Wait for a fuller batch this long.")
    max_in_flight: int = Field(2, ge=1, description="Requests to the destination at once.")
    max_pending: int = Field(
        2_000, ge=1, description="Documents read but not yet delivered before reading pauses."
    )
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0, description="Longest wait between retries.")
    retry_max_elapsed_s: float = Field(
        900.0,
        ge=0,
        description="Retrying a batch longer than this dead-letters it; 0 retries forever.",
    )
    metrics_port: int | None = Field(None, description="Prometheus port; none to disable.")

    def group(self, destination: str) -> str:
        return self.group_id or f"tracebus-sink-{destination}"
