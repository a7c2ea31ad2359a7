"""Stream worker configuration: arguments first, then `TRACEBUS_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tracebus.config import GroupSettings
from tracebus.schemas import DEFAULT_MAX_RECORD_BYTES

# The stream's producer requests (`app.py`): every message it writes must fit in one.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
# The largest value that leaves room in a request for its key, headers and batch framing.
LARGEST_VALUE_BYTES = MAX_REQUEST_BYTES - 64 * 1024


class StreamSettings(GroupSettings):
    app_id: str = Field("tracebus-stream", description="Consumer group and table namespace.")
    store: Literal["memory", "rocksdb"] = Field(
        "memory", description="Local table store; the changelog topic is the durable copy."
    )
    data_dir: Path = Field(Path("tracebus-data"), description="Where a RocksDB store lives.")
    grace_s: float = Field(
        2.0, ge=0, description="Wait after a trace looks complete, for stragglers."
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, description="Publish an incomplete trace after this long without events."
    )
    late_window_s: float = Field(
        600.0, ge=0, description="Keep published traces this long so late events re-publish."
    )
    max_observations: int = Field(
        2000, ge=1, description="Observations per published part; more are published in parts."
    )
    max_document_bytes: int = Field(
        DEFAULT_MAX_RECORD_BYTES,
        ge=64 * 1024,
        le=LARGEST_VALUE_BYTES,
        description="Bytes of one published document (JSON); a larger trace is published in "
        "more parts, an observation larger alone is cut. Changelog entries over it are written "
        "in chunks, and no producer batch is larger. Keep it under the topics' max.message.bytes "
        "(Kafka's default is 1 MiB).",
    )
    max_trace_bytes: int = Field(
        800 * 1024, ge=16 * 1024, description="Bytes of one trace's state before it is split."
    )
    max_open_traces: int = Field(100_000, ge=1, description="Open traces per worker.")
    max_open_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes of traces held per worker: open ones and published ones kept for "
        "late events (those are forgotten first when the bound is reached).",
    )
    overflow_policy: Literal["publish_oldest"] = Field(
        "publish_oldest",
        description="At the memory bound the oldest open trace is published early "
        "(completed_by=evicted) and counted; nothing is dropped.",
    )
    max_record_bytes: int = Field(
        DEFAULT_MAX_RECORD_BYTES,
        le=LARGEST_VALUE_BYTES,
        description="Larger event records are dead-lettered.",
    )
    price_file: Path | None = Field(None, description="TOML file of price overrides.")
    tick_s: float = Field(0.2, gt=0, description="How often deadlines are checked.")
    metrics_port: int | None = Field(None, description="Prometheus port; none to disable.")
