"""Prometheus metrics of a sink worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SinkMetrics:
    def __init__(self, destination: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        labels = {"destination": destination}
        self.records = Counter(
            "tracebus_sink_records", "Records read", ["destination"], registry=r
        ).labels(**labels)
        self.delivered = Counter(
            "tracebus_sink_delivered", "Trace documents delivered", ["destination"], registry=r
        ).labels(**labels)
        self.superseded = Counter(
            "tracebus_sink_superseded",
            "Documents skipped: a higher revision of the trace came",
            ["destination"],
            registry=r,
        ).labels(**labels)
        self.retries = Counter(
            "tracebus_sink_retries", "Requests retried", ["destination"], registry=r
        ).labels(**labels)
        self.dead_letters = Counter(
            "tracebus_sink_dead_letters",
            "Documents dead-lettered",
            ["destination", "reason"],
            registry=r,
        )
        self.destination = destination
        self.batch_size = Histogram(
            "tracebus_sink_batch_traces",
            "Documents per request",
            ["destination"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        ).labels(**labels)
        self.latency = Histogram(
            "tracebus_sink_request_seconds",
            "Duration of successful requests",
            ["destination"],
            registry=r,
        ).labels(**labels)
        self.pending = Gauge(
            "tracebus_sink_pending", "Documents read, not yet done", ["destination"], registry=r
        ).labels(**labels)
        self.lag = Gauge(
            "tracebus_sink_consumer_lag",
            "Records behind the end of the topic",
            ["destination"],
            registry=r,
        ).labels(**labels)
        self.failing = Gauge(
            "tracebus_sink_destination_failing",
            "1 while requests are being retried",
            ["destination"],
            registry=r,
        ).labels(**labels)

    def dead_letter(self, reason: str, count: int = 1) -> None:
        self.dead_letters.labels(self.destination, reason).inc(count)
