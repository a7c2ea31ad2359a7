"""Every worker's HTTP endpoint: Prometheus metrics and a liveness check."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from tracebus.kafka.broker import free_port
from tracebus.observability import Heartbeat, serve_metrics


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_and_health_are_served_and_a_stuck_loop_is_reported() -> None:
    registry = CollectorRegistry()
    Counter("tracebus_test_records", "records", registry=registry).inc(3)
    heartbeat = Heartbeat(stale_after_s=60)
    port = free_port()
    server = serve_metrics(port, registry, heartbeat, host="127.0.0.1")
    try:
        status, text = get(port, "/metrics")
        assert status == 200 and "tracebus_test_records_total 3.0" in text
        assert get(port, "/healthz")[0] == 200
        heartbeat.stale_after_s = 0.0
        status, text = get(port, "/healthz")
        assert status == 503 and text.startswith("stuck: loop seen")
        assert get(port, "/nothing")[0] == 404
    finally:
        server.shutdown()
