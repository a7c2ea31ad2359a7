"""The stream's limits are checked where they are set, not when a write fails."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tracebus.streams.app import faust_app
from tracebus.streams.settings import LARGEST_VALUE_BYTES, StreamSettings


@pytest.mark.parametrize("name", ["max_document_bytes", "max_record_bytes"])
def test_a_limit_larger_than_the_producers_requests_is_refused(name: str) -> None:
    StreamSettings(**{name: LARGEST_VALUE_BYTES})
    with pytest.raises(ValidationError, match=name):
        StreamSettings(**{name: LARGEST_VALUE_BYTES + 1})


def test_no_batch_the_worker_writes_is_larger_than_a_document() -> None:
    """A topic whose message limit takes the documents takes every batch (the broker holds a
    record batch as a whole to the limit)."""
    app = faust_app(StreamSettings(max_document_bytes=100_000))
    assert app.conf.producer_max_batch_size == 100_000


def test_the_group_session_timeout_is_the_workers_setting_and_no_shorter_than_3_s() -> None:
    """Its heartbeats go every second: a shorter session would drop a worker between two."""
    assert faust_app(StreamSettings(session_timeout_s=4)).conf.broker_session_timeout == 4
    with pytest.raises(ValidationError, match="session_timeout_s"):
        StreamSettings(session_timeout_s=2)
