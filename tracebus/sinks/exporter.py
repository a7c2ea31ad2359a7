"""What every destination implements, and how its failures are classified.

The delivery runtime (batching, retries, bisecting, dead letters, offsets) is shared; an
exporter only turns complete traces into one request to its destination."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from typing import Protocol

import httpx

from tracebus.schemas import TraceDocument

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# A bad or revoked key fails every trace alike: dead-lettering them all would be wrong, so the
# runtime keeps retrying (and alerts) until the operator fixes the credentials.
CREDENTIAL_STATUS = frozenset({401, 403})


class ExportError(Exception):
    """A failed export.

    `retryable` errors are tried again after back-off (at least `retry_after` seconds when the
    destination said so). Other errors are permanent: a batch the destination rejected as a
    whole (`whole_batch`) is bisected to find the offending trace, which is dead-lettered with
    `response`; a single trace is dead-lettered directly."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        response: str | None = None,
        whole_batch: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.response = response
        self.whole_batch = whole_batch


class Exporter(Protocol):
    """Delivers complete traces to one destination; idempotent for the same documents."""

    name: str

    async def export(self, documents: Sequence[TraceDocument]) -> None:
        """Deliver all `documents` or raise ExportError; never deliver a part silently."""
        ...

    async def close(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def check_response(response: httpx.Response, destination: str) -> None:
    """Raise the ExportError a non-2xx response means; 413/400/422 reject the whole batch."""
    if response.is_success:
        return
    status = response.status_code
    body = response.text[:2000]
    raise ExportError(
        f"{destination} answered {status}: {body[:200]}",
        retryable=status in RETRYABLE_STATUS or status in CREDENTIAL_STATUS,
        status=status,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        response=body,
        whole_batch=status in (400, 413, 422),
    )


def connection_error(error: httpx.HTTPError, destination: str) -> ExportError:
    """Connection failures and timeouts are retried."""
    return ExportError(f"{destination} unreachable: {error!r}", retryable=True)
