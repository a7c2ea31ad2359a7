"""Prometheus metrics of a gateway process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tracebus_gateway_requests",
            "Requests answered, by protocol, route and HTTP status.",
            ["protocol", "route", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "tracebus_gateway_events",
            "Events acknowledged by Kafka, by protocol.",
            ["protocol"],
            registry=self.registry,
        )
        self.request_bytes = Counter(
            "tracebus_gateway_request_bytes",
            "Request body bytes received as sent (before decompression), by protocol.",
            ["protocol"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tracebus_gateway_request_seconds",
            "Time from request to answer, including the wait for Kafka, by protocol.",
            ["protocol"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.kafka_connected = Gauge(
            "tracebus_gateway_kafka_connected",
            "1 while the gateway's producer is connected to Kafka.",
            registry=self.registry,
        )
