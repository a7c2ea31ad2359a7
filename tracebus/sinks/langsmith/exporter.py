"""Delivery of complete traces to LangSmith's multipart ingestion endpoint.

Why not the langsmith SDK's `Client.multipart_ingest`: after its own attempts it logs a failed
batch and returns normally (the 3-attempt loop in `_send_multipart_req` swallows every error,
the optional `tracing_error_callback` only gets an exception without status or Retry-After);
below that loop urllib3 retries 429/5xx again, sleeping for Retry-After; a 404 silently falls
back to /runs/batch; `LANGSMITH_TRACING_SAMPLING_RATE` can drop runs; connection errors quote
part of the API key. Our runtime must see every failure, classified, and owns retries, so the
identical request (same part names, part headers and JSON bytes) is built here and sent with
httpx. tests/sinks/test_langsmith_sdk.py checks the parts against the SDK's."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Sequence

import httpx
import orjson

from tracebus.schemas import TraceDocument
from tracebus.sinks.exporter import ExportError, check_response, connection_error
from tracebus.sinks.langsmith.multipart import (
    Compression,
    Part,
    feedback_part,
    request_body,
    run_parts,
)
from tracebus.sinks.langsmith.runs import langsmith_trace
from tracebus.sinks.langsmith.tree import TreeError

logger = logging.getLogger(__name__)

DESTINATION = "langsmith"
DEFAULT_API_URL = "https://api.smith.langchain.com"
# The SDK's default batch cap; LangSmith's backend rejects payloads above about 25 MB.
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
_CONFLICT_RESEND_CONCURRENCY = 8

Item = list[Part]  # the parts of one run, or the one part of one feedback


class LangSmithExporter:
    """Sends every run of every document complete, in one `post` op per run, in one request."""

    name = DESTINATION

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        project: str,
        timeout: float = 10.0,
        workspace_id: str | None = None,
        compression: Compression = "gzip",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not project:
            raise ValueError("a LangSmith project name is required")
        self.api_url = api_url.rstrip("/")
        self.project = project
        self.compression = compression
        self.max_body_bytes = max_body_bytes
        self._headers = {
            "x-api-key": api_key,
            "Accept": "application/json",
            "User-Agent": f"tracebus/{_version()}",
        }
        if workspace_id:
            self._headers["X-Tenant-Id"] = workspace_id
        self._client = httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:  # the API key stays out of logs and tracebacks
        return f"LangSmithExporter(api_url={self.api_url!r}, project={self.project!r})"

    async def export(self, documents: Sequence[TraceDocument]) -> None:
        items = _each_once([item for document in documents for item in self._items(document)])
        if items:
            await self._deliver(items)

    async def close(self) -> None:
        await self._client.aclose()

    def _items(self, document: TraceDocument) -> list[Item]:
        try:
            trace = langsmith_trace(document, project=self.project)
            return [run_parts(run) for run in trace.runs] + [
                [feedback_part(feedback)] for feedback in trace.feedback
            ]
        except (TreeError, orjson.JSONEncodeError) as error:
            raise ExportError(
                f"{DESTINATION}: trace {document.trace_id} cannot be sent: {error}",
                retryable=False,
                whole_batch=True,
            ) from error

    async def _deliver(self, items: Sequence[Item]) -> None:
        conflict = await self._post(items)
        if conflict and len(items) > 1:
            # 409 = "payload already received". Whether LangSmith also stored the new runs of a
            # batch that mixes old and new ones (a replay, or a revision with late
            # observations) is not documented; sent one by one, each is stored or known.
            logger.info(
                "%s answered 409 to %d items: resending one by one", DESTINATION, len(items)
            )
            await self._deliver_one_by_one(items)

    async def _deliver_one_by_one(self, items: Sequence[Item]) -> None:
        limit = asyncio.Semaphore(_CONFLICT_RESEND_CONCURRENCY)

        async def send(item: Item) -> None:
            async with limit:
                await self._post([item])

        results = await asyncio.gather(*(send(item) for item in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _post(self, items: Sequence[Item]) -> bool:
        """Send `items` in one request; True when LangSmith already had them (409)."""
        body = request_body([part for item in items for part in item], self.compression)
        if body.uncompressed_size > self.max_body_bytes:
            raise ExportError(
                f"{DESTINATION}: request of {body.uncompressed_size} bytes exceeds the "
                f"{self.max_body_bytes}-byte limit",
                retryable=False,
                whole_batch=True,
            )
        try:
            response = await self._client.post(
                f"{self.api_url}/runs/multipart",
                content=body.content,
                headers={**self._headers, **body.headers},
            )
        except httpx.HTTPError as error:
            raise connection_error(error, DESTINATION) from error
        if response.status_code == 409:
            return True
        check_response(response, DESTINATION)
        return False


def _each_once(items: Sequence[Item]) -> list[Item]:
    """`items` without exact repeats, in order. The parts of a trace without a root each carry
    the same synthetic root run, and LangSmith refuses a request that holds a run twice."""
    seen: set[tuple[Part, ...]] = set()
    unique: list[Item] = []
    for item in items:
        key = tuple(item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _version() -> str:
    try:
        return importlib.metadata.version("tracebus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
