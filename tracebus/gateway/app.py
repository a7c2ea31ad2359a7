"""The gateway's HTTP application: every adapter's routes behind authentication, rate limits,
body limits and one error path, plus `/healthz` and `/metrics`."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tracebus.gateway.auth import ANONYMOUS, KeyRing
from tracebus.gateway.body import read_body
from tracebus.gateway.ingest import KafkaPublisher
from tracebus.gateway.limits import RateLimiter
from tracebus.gateway.metrics import GatewayMetrics
from tracebus.gateway.protocol import Adapter, Call, Caller, GatewayError, Publisher, Route
from tracebus.gateway.settings import GatewaySettings

log = logging.getLogger("tracebus.gateway")
# Options for aiohttp's server: read_body decodes bodies with its own size limits, and
# aiohttp's automatic decoding has none.
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}


class _CountingPublisher:
    """The shared publisher, counting what one adapter got acknowledged."""

    def __init__(self, publisher: KafkaPublisher, metrics: GatewayMetrics, protocol: str) -> None:
        self._publisher = publisher
        self._events = metrics.events.labels(protocol)

    @property
    def connected(self) -> bool:
        return self._publisher.connected

    def problem(self, event: dict[str, Any]) -> str | None:
        return self._publisher.problem(event)

    async def publish(self, events: Sequence[dict[str, Any]], caller: Caller) -> None:
        await self._publisher.publish(events, caller)
        self._events.inc(len(events))


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        keys: KeyRing,
        adapters: Sequence[Adapter],
        publisher: KafkaPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.adapters = adapters
        self.publisher = publisher or KafkaPublisher(settings)
        self.metrics = GatewayMetrics()
        self.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)

    def application(self) -> web.Application:
        # The body is read by read_body with its own limits; aiohttp's cap would answer first
        # with a generic 413.
        app = web.Application(client_max_size=self.settings.max_body_bytes + 1)
        for adapter in self.adapters:
            publisher = _CountingPublisher(self.publisher, self.metrics, adapter.name)
            for route in adapter.routes:
                app.router.add_route(
                    route.method, route.path, self._endpoint(adapter, route, publisher)
                )
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        await self.publisher.start()

    async def _stop(self, _: web.Application) -> None:
        await self.publisher.stop()

    def _endpoint(self, adapter: Adapter, route: Route, publisher: Publisher) -> Any:
        requests = self.metrics.requests
        latency = self.metrics.latency.labels(adapter.name)
        received = self.metrics.request_bytes.labels(adapter.name)

        async def handle(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                caller = self.keys.caller(request.headers) if route.authenticated else ANONYMOUS
                if route.authenticated:
                    self.limiter.admit(caller)
                body = b""
                if request.can_read_body:
                    body = await read_body(
                        request, self.settings.max_body_bytes, self.settings.max_decoded_bytes
                    )
                    received.inc(request.content_length or len(body))
                call = Call(request, caller, body, publisher, self.settings)
                response = await route.handler(call)
            except GatewayError as error:
                response = self._error(adapter, request, error)
            except Exception:
                log.exception("%s %s failed", request.method, route.path)
                response = self._error(
                    adapter, request, GatewayError(500, "internal gateway error")
                )
            requests.labels(adapter.name, route.path, str(response.status)).inc()
            latency.observe(time.perf_counter() - started)
            return response

        return handle

    def _error(
        self, adapter: Adapter, request: web.Request, error: GatewayError
    ) -> web.StreamResponse:
        if error.status >= 500:
            log.warning("%s %s → %d: %s", request.method, request.path, error.status, error)
        response = adapter.render_error(request, error)
        if error.retry_after_s is not None:
            response.headers["Retry-After"] = str(math.ceil(error.retry_after_s))
        return response

    async def _health(self, _: web.Request) -> web.Response:
        connected = self.publisher.connected
        self.metrics.kafka_connected.set(int(connected))
        text = "ok: connected to Kafka\n" if connected else "unavailable: Kafka not connected\n"
        return web.Response(status=200 if connected else 503, text=text)

    async def _metrics(self, _: web.Request) -> web.Response:
        self.metrics.kafka_connected.set(int(self.publisher.connected))
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
