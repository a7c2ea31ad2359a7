"""How each way Langfuse can fail becomes an ExportError the delivery runtime can act on."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import pytest
from documents import reference_trace
from standins.langfuse import LangfuseStandIn

from tracebus.sinks.exporter import ExportError
from tracebus.sinks.langfuse import LangfuseExporter

SECRET = "sk-lf-very-secret"


@pytest.fixture
def langfuse() -> Iterator[LangfuseStandIn]:
    with LangfuseStandIn(public_key="pk-lf-test", secret_key=SECRET) as standin:
        yield standin


def export_error(
    langfuse: LangfuseStandIn, *, secret_key: str = SECRET, timeout: float = 2.0
) -> ExportError:
    """The ExportError of exporting the reference trace once."""

    async def run() -> None:
        exporter = LangfuseExporter(langfuse.url, langfuse.public_key, secret_key, timeout=timeout)
        try:
            await exporter.export([reference_trace()])
        finally:
            await exporter.close()

    with pytest.raises(ExportError) as raised:
        asyncio.run(run())
    return raised.value


def export(langfuse: LangfuseStandIn) -> None:
    async def run() -> None:
        exporter = LangfuseExporter(langfuse.url, langfuse.public_key, SECRET)
        try:
            await exporter.export([reference_trace()])
        finally:
            await exporter.close()

    asyncio.run(run())


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(langfuse, status):
    error = export_error_after(langfuse, status)

    assert (error.retryable, error.status, error.whole_batch) == (True, status, False)
    assert langfuse.spans == []


def test_rate_limiting_is_retried_no_sooner_than_retry_after(langfuse):
    langfuse.fail_next(429, retry_after=7)

    error = export_error(langfuse)

    assert (error.retryable, error.status, error.retry_after) == (True, 429, 7.0)


def test_a_too_large_batch_is_rejected_whole_so_it_gets_split(langfuse):
    error = export_error_after(langfuse, 413)

    assert (error.retryable, error.status, error.whole_batch) == (False, 413, True)


def test_a_batch_over_the_servers_body_limit_is_rejected_whole(langfuse):
    langfuse.max_body_bytes = 200

    error = export_error(langfuse)

    assert (error.retryable, error.status, error.whole_batch) == (False, 413, True)
    assert langfuse.spans == []


def test_an_invalid_batch_is_rejected_whole_so_the_bad_trace_can_be_found(langfuse):
    error = export_error_after(langfuse, 400)

    assert (error.retryable, error.status, error.whole_batch) == (False, 400, True)
    assert error.response is not None


def test_a_timeout_is_retried(langfuse):
    langfuse.hang_next()

    error = export_error(langfuse, timeout=0.2)

    assert (error.retryable, error.status) == (True, None)
    assert "timeout" in str(error).lower()


def test_a_response_lost_after_the_spans_were_stored_is_retried_without_duplicates(langfuse):
    langfuse.hang_next(endpoint="traces", after_recording=True)

    error = export_error(langfuse, timeout=0.2)
    export(langfuse)

    assert error.retryable
    assert len(langfuse.spans) == 5
    assert set(langfuse.receipts.values()) == {2}


def test_connection_refused_is_retried(langfuse):
    with langfuse.down():
        error = export_error(langfuse)

    assert (error.retryable, error.status) == (True, None)
    export(langfuse)  # back on the same port
    assert len(langfuse.spans) == 5


def test_a_failed_score_fails_the_export_and_a_retry_completes_it(langfuse):
    langfuse.fail_next(503, endpoint="scores")

    error = export_error(langfuse)
    export(langfuse)

    assert (error.retryable, error.status) == (True, 503)
    assert len(langfuse.spans) == 5
    assert set(langfuse.receipts.values()) == {2}
    assert len(langfuse.scores) == 2


def test_wrong_credentials_are_retried_until_fixed_and_the_secret_is_never_shown(langfuse):
    wrong = "sk-lf-wrong-but-still-secret"

    error = export_error(langfuse, secret_key=wrong)

    # Every trace would fail alike: the runtime retries (and alerts) rather than dead-letters.
    assert (error.retryable, error.status, error.whole_batch) == (True, 401, False)
    assert_secret_not_shown(error, wrong)


@pytest.mark.parametrize("failure", ["status", "timeout", "refused"])
def test_no_error_shows_the_secret(langfuse, failure):
    if failure == "status":
        langfuse.fail_next(503)
        error = export_error(langfuse)
    elif failure == "timeout":
        langfuse.hang_next()
        error = export_error(langfuse, timeout=0.2)
    else:
        with langfuse.down():
            error = export_error(langfuse)

    assert_secret_not_shown(error, SECRET)


def export_error_after(langfuse: LangfuseStandIn, status: int) -> ExportError:
    langfuse.fail_next(status)
    return export_error(langfuse)


def assert_secret_not_shown(error: ExportError, secret: str) -> None:
    basic = base64.b64encode(f"pk-lf-test:{secret}".encode()).decode()
    for text in (str(error), repr(error), error.response or "", repr(error.__cause__)):
        assert secret not in text
        assert basic not in text
