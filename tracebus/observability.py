"""The HTTP endpoint every worker serves: Prometheus metrics and a liveness check."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class Heartbeat:
    """Beaten by a worker's main loop; stale means the loop is stuck, not just idle."""

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last

    @property
    def alive(self) -> bool:
        return self.age() < self.stale_after_s


class Heartbeats:
    """The heartbeats of several loops in one worker: as stale as the stalest."""

    def __init__(self, beats: Sequence[Heartbeat]) -> None:
        self._beats = list(beats)

    def age(self) -> float:
        return max(beat.age() for beat in self._beats)

    @property
    def alive(self) -> bool:
        return all(beat.alive for beat in self._beats)


def serve_metrics(
    port: int,
    registry: CollectorRegistry,
    heartbeat: Heartbeat | Heartbeats,
    host: str = "0.0.0.0",
) -> ThreadingHTTPServer:
    """Serve `/metrics` (Prometheus text format) and `/healthz` (200 while the heartbeat is
    fresh, 503 when it is stale) from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                age = heartbeat.age()
                status = 200 if heartbeat.alive else 503
                body = f"{'ok' if status == 200 else 'stuck'}: loop seen {age:.1f}s ago\n"
                self._answer(status, body.encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would flood the worker's log

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
