"""Delivery of complete traces to Langfuse: spans over OTLP/HTTP, then scores over REST."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Sequence
from typing import Any

import httpx

from tracebus.schemas import TraceDocument
from tracebus.sinks.exporter import check_response, connection_error
from tracebus.sinks.langfuse.otlp import TRACEBUS_VERSION, to_otlp_request
from tracebus.sinks.langfuse.scores import score_bodies

TRACES_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"
# Version 4 selects the direct write path: spans are visible at once and stored one row each.
INGESTION_VERSION = "4"


class LangfuseExporter:
    """Exports each batch of traces as one gzip-compressed OTLP protobuf request, then each
    score as one request. Both are idempotent: spans keep their ids and start times, scores
    their ids, so a batch that failed half way is simply sent again."""

    name = "langfuse"

    def __init__(
        self,
        base_url: str,
        public_key: str,
        secret_key: str,
        *,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(public_key, secret_key)
        self._timeout = timeout
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None
        self._headers = {
            "x-langfuse-ingestion-version": INGESTION_VERSION,
            "x-langfuse-sdk-name": "tracebus",
            "x-langfuse-sdk-version": TRACEBUS_VERSION,
            "x-langfuse-public-key": public_key,
        }

    def __repr__(self) -> str:
        return f"LangfuseExporter(base_url={self._base_url!r})"

    async def export(self, documents: Sequence[TraceDocument]) -> None:
        # Encoding a large batch takes milliseconds of CPU: keep it off the event loop.
        body = await asyncio.to_thread(encode_spans, documents)
        if body is not None:
            await self._post(
                TRACES_PATH,
                content=body,
                headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
            )
        # Only after the spans: a score of a trace Langfuse does not have yet would dangle.
        for score in score_bodies(documents):
            await self._post(SCORES_PATH, json=score)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _post(self, path: str, *, headers: dict[str, str] | None = None, **body: Any) -> None:
        try:
            response = await self._client.post(
                f"{self._base_url}{path}",
                headers={**self._headers, **(headers or {})},
                auth=self._auth,
                timeout=self._timeout,
                **body,
            )
        except httpx.HTTPError as error:
            # `from None`: the httpx error holds the request, whose headers hold the secret key.
            raise connection_error(error, self.name) from None
        check_response(response, self.name)


def encode_spans(documents: Sequence[TraceDocument]) -> bytes | None:
    """The gzip-compressed protobuf request for `documents`, None when they have no spans."""
    request = to_otlp_request(documents)
    if not request.resource_spans:
        return None
    # mtime=0: the same documents always make the same bytes.
    return gzip.compress(request.SerializeToString(), compresslevel=6, mtime=0)
