"""Gateways for the tests: a real `tracebus gateway` process, ready once its /healthz answers
200, and a gateway served in the test's own event loop with the adapters under test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiohttp.test_utils import TestServer
from workers import CliWorker

from tracebus.config import KafkaSettings
from tracebus.gateway.app import SERVER_OPTIONS, Gateway
from tracebus.gateway.auth import KeyRing
from tracebus.gateway.protocol import Adapter
from tracebus.gateway.settings import GatewaySettings
from tracebus.kafka.broker import free_port

PROJECT = "shop"
API_KEY = "tb-test-secret"
LANGFUSE_PUBLIC_KEY = "pk-lf-gateway"
LANGFUSE_SECRET_KEY = "sk-lf-gateway"


class GatewayProcess(CliWorker):
    """`tracebus gateway` on a free port, accepting `API_KEY` and the Langfuse key pair
    `LANGFUSE_PUBLIC_KEY:LANGFUSE_SECRET_KEY` for project `PROJECT`, and `more_keys`
    (`project=key` pairs)."""

    def __init__(
        self,
        settings: KafkaSettings,
        log_dir: Path,
        more_keys: Iterable[str] = (),
        **environment: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        own = [f"{PROJECT}={API_KEY}", f"{PROJECT}={LANGFUSE_PUBLIC_KEY}:{LANGFUSE_SECRET_KEY}"]
        keys = ",".join([*own, *more_keys])
        super().__init__(
            ["gateway", "--host", "127.0.0.1", "--port", str(self.port)],
            {
                **settings.worker_env(),
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


@asynccontextmanager
async def in_process_gateway(
    settings: KafkaSettings,
    adapters: Sequence[Adapter],
    keys: Iterable[tuple[str, str]],
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with `adapters` and (project, key) `keys` on a free port, publishing to the real
    broker of `settings` (with `overrides` of GatewaySettings); yields a client for it."""
    gateway_settings = GatewaySettings(**{**settings.model_dump(), **overrides})
    keyring = KeyRing(keys, gateway_settings.allow_anonymous)
    server = TestServer(Gateway(gateway_settings, keyring, adapters).application())
    await server.start_server(**SERVER_OPTIONS)
    try:
        async with httpx.AsyncClient(
            base_url=str(server.make_url("")), headers=headers, timeout=30
        ) as client:
            yield client
    finally:
        await server.close()


def scenario(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())
