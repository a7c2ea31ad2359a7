"""What a protocol adapter gives the gateway (routes and an error format) and what each of its
handlers receives (an authenticated, size-checked, decompressed call)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from tracebus.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the project its API key belongs to, and a printable key name (never
    the key itself)."""

    project: str
    key_name: str


class GatewayError(Exception):
    """A request the gateway answers with an error; the protocol renders it in its own format."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class Publisher(Protocol):
    """The gateway's way into Kafka (implemented in `tracebus.gateway.ingest`)."""

    @property
    def connected(self) -> bool:
        """Whether Kafka is reachable now (a publish would not fail at once with 503)."""

    def problem(self, event: dict[str, Any]) -> str | None:
        """Why `event` cannot be published — it breaks the wire contract (every violation, with
        paths) or is larger than a record may be — or None."""

    async def publish(self, events: Sequence[dict[str, Any]], caller: Caller) -> None:
        """Publish events that passed `problem` (one record per trace, in the given order) and
        return once Kafka has acknowledged every record. Raises GatewayError(503, …,
        retry_after_s) when Kafka cannot take them; then some records may have been written,
        which is safe because every event has a deterministic id and the stream applies an event
        id once."""


@dataclass
class Call:
    """One request as a handler sees it."""

    request: web.Request
    caller: Caller
    body: bytes
    publisher: Publisher
    settings: GatewaySettings

    @property
    def content_type(self) -> str:
        return self.request.headers.get("Content-Type", "")


Handler = Callable[[Call], Awaitable[web.StreamResponse]]
ErrorRenderer = Callable[[web.Request, GatewayError], web.StreamResponse]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    authenticated: bool = True


@dataclass(frozen=True)
class Adapter:
    """A protocol adapter: its routes, and how it renders errors (Langfuse `{"message"}`,
    LangSmith `{"detail"}`, OTLP a `google.rpc.Status`)."""

    name: str
    routes: Sequence[Route]
    render_error: ErrorRenderer
