"""Configuration shared by every component: constructor arguments first, then `TRACEBUS_*`."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Where the broker is and what the topics are called."""

    model_config = SettingsConfigDict(env_prefix="TRACEBUS_", extra="ignore")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    events_topic: str = Field("tracebus.events", description="Topic apps send events to.")
    traces_topic: str = Field("tracebus.traces", description="Topic of complete traces.")
    dead_letter_topic: str = Field(
        "tracebus.deadletter", description="Records that could not be processed, with reasons."
    )
    partitions: int = Field(8, ge=1, description="Partitions of each topic created by tracebus.")
    replication_factor: int = Field(
        1, ge=1, description="Replicas of each topic tracebus creates (3 on a real cluster)."
    )

    def worker_env(self) -> dict[str, str]:
        """These settings as the `TRACEBUS_*` variables a worker process reads them from."""
        return {
            f"TRACEBUS_{name.upper()}": str(getattr(self, name))
            for name in KafkaSettings.model_fields
        }

    def topic_partitions(self) -> dict[str, int]:
        return {
            self.events_topic: self.partitions,
            self.traces_topic: self.partitions,
            self.dead_letter_topic: 1,
        }


class GroupSettings(KafkaSettings):
    """A worker that shares partitions with others through a consumer group."""

    session_timeout_s: float = Field(
        10.0,
        ge=3,
        le=300,
        description="A worker not heard from this long is dropped from its group and the "
        "others take its partitions: how long those of a killed worker wait (one that stops "
        "leaves at once). Heartbeats go every second. Apache Kafka refuses less than its "
        "group.min.session.timeout.ms (6 s by default).",
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="How long a worker that stops goes on delivering what it has taken on: a "
        "sink its batches, the stream the trace documents it has queued. Also when its "
        "partitions move (the stream: 5 s at most, half the group's rebalance timeout). What "
        "is left is delivered again by the worker that takes the partitions.",
    )
    stop_timeout_s: float = Field(
        45.0,
        gt=0,
        description="How long a worker that stops may take in all: drain, commit, leave its "
        "group. One that cannot reach the broker would otherwise wait on its Kafka clients' "
        "retries (20 minutes for the stream's producer). Past it the worker exits with code 5, "
        "as if killed: what it did not commit is read again by the worker that takes its "
        "partitions. Must exceed the drain timeout; give an orchestrator's grace period "
        "(Kubernetes' terminationGracePeriodSeconds) a few seconds more.",
    )

    @model_validator(mode="after")
    def _stop_outlasts_drain(self) -> Self:
        if self.stop_timeout_s <= self.drain_timeout_s:
            raise ValueError(
                f"stop_timeout_s ({self.stop_timeout_s:g}) must exceed drain_timeout_s "
                f"({self.drain_timeout_s:g}): a stop drains first, then commits"
            )
        return self
