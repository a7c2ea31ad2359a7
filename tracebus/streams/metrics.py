"""Prometheus metrics of a stream worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter("tracebus_stream_records", "Event records consumed", registry=r)
        self.events = Counter("tracebus_stream_events", "Events applied", registry=r)
        self.duplicates = Counter(
            "tracebus_stream_duplicate_events", "Events skipped: event id seen", registry=r
        )
        self.late_events = Counter(
            "tracebus_stream_late_events", "Events after publication (new revision)", registry=r
        )
        self.dead_letters = Counter(
            "tracebus_stream_dead_letters", "Records dead-lettered", ["reason"], registry=r
        )
        self.published = Counter(
            "tracebus_stream_traces_published",
            "Trace documents published",
            ["completed_by"],
            registry=r,
        )
        self.evictions = Counter(
            "tracebus_stream_overflow_evictions",
            "Open traces published early because the memory bound was reached",
            registry=r,
        )
        self.forgotten = Counter(
            "tracebus_stream_forgotten_traces",
            "Published traces whose content was dropped before the late window ended, "
            "because the memory bound was reached",
            registry=r,
        )
        self.unpriced = Counter(
            "tracebus_stream_unpriced_generations",
            "Generations with usage but no price",
            registry=r,
        )
        self.skipped_records = Counter(
            "tracebus_stream_skipped_records",
            "Records the consumer skipped (Faust drops some around a rebalance), read and "
            "handled when the gap showed",
            registry=r,
        )
        self.wakes = Counter(
            "tracebus_stream_partition_wakes",
            "Partitions whose records stopped reaching the agent, woken with a control record",
            registry=r,
        )
        self.open_traces = Gauge("tracebus_stream_open_traces", "Traces held", registry=r)
        self.open_bytes = Gauge(
            "tracebus_stream_open_bytes", "Bytes of traces being assembled", registry=r
        )
        self.held_bytes = Gauge(
            "tracebus_stream_held_bytes",
            "Bytes of traces held, open or published (not those on their way out)",
            registry=r,
        )
        self.publishing_traces = Gauge(
            "tracebus_stream_publishing_traces",
            "Traces on their way out: documents queued or sent, acknowledgement not yet applied",
            registry=r,
        )
        self.publish_seconds = Histogram(
            "tracebus_stream_publish_seconds", "Time to publish a round of documents", registry=r
        )
