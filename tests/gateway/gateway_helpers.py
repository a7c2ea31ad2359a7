"""A real `tracebus gateway` process for the tests, ready once its /healthz answers 200."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from workers import CliWorker

from tracebus.config import KafkaSettings
from tracebus.kafka.broker import free_port

PROJECT = "shop"
API_KEY = "tb-test-secret"
LANGFUSE_PUBLIC_KEY = "pk-lf-gateway"
LANGFUSE_SECRET_KEY = "sk-lf-gateway"


class GatewayProcess(CliWorker):
    """`tracebus gateway` on a free port, accepting `API_KEY` and the Langfuse key pair
    `LANGFUSE_PUBLIC_KEY:LANGFUSE_SECRET_KEY` for project `PROJECT`."""

    def __init__(self, settings: KafkaSettings, log_dir: Path, **environment: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keys = f"{PROJECT}={API_KEY},{PROJECT}={LANGFUSE_PUBLIC_KEY}:{LANGFUSE_SECRET_KEY}"
        super().__init__(
            ["gateway", "--host", "127.0.0.1", "--port", str(self.port)],
            {
                "TRACEBUS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                "TRACEBUS_EVENTS_TOPIC": settings.events_topic,
                "TRACEBUS_API_KEYS": keys,
                **environment,
            },
            log_dir / f"gateway-{self.port}.log",
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling interval while the process starts, not a synchronisation
        raise AssertionError(f"gateway not ready after {timeout}s:\n{self.log_tail()}")
