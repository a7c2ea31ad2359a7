"""Prometheus metrics of a sink worker, labelled by destination and by the project of the
route (empty for the sink's own destination)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LABELS = ("destination", "project")


class SinkMetricFamilies:
    """The metric families of one sink process; each route's runtime labels its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter("tracebus_sink_records", "Records read", _LABELS, registry=r)
        self.delivered = Counter(
            "tracebus_sink_delivered", "Trace documents delivered", _LABELS, registry=r
        )
        self.superseded = Counter(
            "tracebus_sink_superseded",
            "Documents skipped: a higher revision of the trace came",
            _LABELS,
            registry=r,
        )
        self.retries = Counter("tracebus_sink_retries", "Requests retried", _LABELS, registry=r)
        self.dead_letters = Counter(
            "tracebus_sink_dead_letters",
            "Documents dead-lettered",
            (*_LABELS, "reason"),
            registry=r,
        )
        self.batch_size = Histogram(
            "tracebus_sink_batch_traces",
            "Documents per request",
            _LABELS,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.latency = Histogram(
            "tracebus_sink_request_seconds", "Duration of successful requests", _LABELS, registry=r
        )
        self.pending = Gauge(
            "tracebus_sink_pending", "Documents read, not yet done", _LABELS, registry=r
        )
        self.lag = Gauge(
            "tracebus_sink_consumer_lag", "Records behind the end of the topic", _LABELS, registry=r
        )
        self.failing = Gauge(
            "tracebus_sink_destination_failing",
            "1 while requests are being retried",
            _LABELS,
            registry=r,
        )


class SinkMetrics:
    """The metrics of one delivery runtime: `destination`, for `project`'s route or ("") the
    sink's own destination."""

    def __init__(
        self, destination: str, families: SinkMetricFamilies | None = None, project: str = ""
    ) -> None:
        f = self.families = families or SinkMetricFamilies()
        labels = (destination, project)
        self.records = f.records.labels(*labels)
        self.delivered = f.delivered.labels(*labels)
        self.superseded = f.superseded.labels(*labels)
        self.retries = f.retries.labels(*labels)
        self.batch_size = f.batch_size.labels(*labels)
        self.latency = f.latency.labels(*labels)
        self.pending = f.pending.labels(*labels)
        self.lag = f.lag.labels(*labels)
        self.failing = f.failing.labels(*labels)
        self._labels = labels

    @property
    def registry(self) -> CollectorRegistry:
        return self.families.registry

    def dead_letter(self, reason: str, count: int = 1) -> None:
        self.families.dead_letters.labels(*self._labels, reason).inc(count)
