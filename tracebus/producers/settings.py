"""Producer configuration: constructor arguments, else `TRACEBUS_*` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tracebus.config import KafkaSettings
from tracebus.schemas import DEFAULT_MAX_RECORD_BYTES, MAX_PROJECT_CHARS, Limits


class ProducerSettings(KafkaSettings):
    enabled: bool = Field(True, description="False turns every call into a cheap no-op.")
    sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of traces kept; decided by trace id, whole traces."
    )
    project: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PROJECT_CHARS,
        description="Project stamped on every record (the tracebus-project header), by which "
        "the sinks route traces; the gateway sets it from the API key instead.",
    )
    environment: str | None = Field(None, description="Environment set on every trace.")
    release: str | None = Field(None, description="Release set on every trace.")
    buffer_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        description="Events wait in memory up to this size while Kafka is slow or down; "
        "beyond it the oldest are dropped and counted.",
    )
    batch_max_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Bytes taken per send round; larger rounds pack more events per record.",
    )
    batch_max_events: int = Field(20_000, ge=1, description="Events sent per send round.")
    linger_ms: float = Field(
        20.0, ge=0, description="How long events wait for more of their trace before sending."
    )
    compression: Literal["lz4", "gzip", "zstd", "snappy", "none"] = "lz4"
    acks: Literal["all", "1"] = Field("all", description="Broker acknowledgement awaited.")
    request_timeout_ms: int = Field(10_000, ge=100)
    max_record_bytes: int = Field(DEFAULT_MAX_RECORD_BYTES, ge=4096)
    max_field_bytes: int = Field(256 * 1024, description="Input/output/metadata size limit.")
    max_event_bytes: int = Field(900 * 1024, description="Size limit of one serialised event.")
    retry_backoff_max_s: float = Field(5.0, gt=0, description="Longest wait between send tries.")
    exit_flush_timeout_s: float = Field(5.0, ge=0, description="Flush budget at interpreter exit.")
    capture_input: bool = Field(True, description="@observe records arguments by default.")
    capture_output: bool = Field(True, description="@observe records return values by default.")

    @model_validator(mode="after")
    def _event_fits_record(self) -> ProducerSettings:
        if self.max_event_bytes + 1024 > self.max_record_bytes:
            raise ValueError("max_event_bytes must leave 1 KiB of room below max_record_bytes")
        Limits(self.max_field_bytes, self.max_event_bytes)
        return self

    @property
    def limits(self) -> Limits:
        return Limits(self.max_field_bytes, self.max_event_bytes)
