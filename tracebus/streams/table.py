"""The stream's table: Faust's, with its latest changelog write at hand to await."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import FutureMessage


class TraceTable(faust.Table):
    """A `faust.Table` that keeps the future of its latest changelog write.

    The publisher must know a trace's `publishing` mark is in the changelog before its
    documents leave. Flushing the producer would tell, but a flush returns only once the
    producer's buffer is empty, which an agent reading a backlog keeps from ever happening:
    every trace closed meanwhile would wait in memory, documents built, until the backlog was
    read. A write's future resolves when the broker has acknowledged it (and the writes of its
    changelog partition before it)."""

    last_write: FutureMessage

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> FutureMessage:
        self.last_write = super().send_changelog(
            partition, key, value, key_serializer, value_serializer
        )
        return self.last_write
