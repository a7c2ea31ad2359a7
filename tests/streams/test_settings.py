"""The stream's limits are checked where they are set, not when a write fails."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tracebus.streams.settings import LARGEST_VALUE_BYTES, StreamSettings


@pytest.mark.parametrize("name", ["max_document_bytes", "max_record_bytes"])
def test_a_limit_larger_than_the_producers_requests_is_refused(name: str) -> None:
    StreamSettings(**{name: LARGEST_VALUE_BYTES})
    with pytest.raises(ValidationError, match=name):
        StreamSettings(**{name: LARGEST_VALUE_BYTES + 1})
