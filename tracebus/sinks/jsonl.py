"""The jsonl sink: complete traces appended to size-rotated files, one document per line.

The embedded default destination and an archive. Append-only: a replay appends again, so
readers keep the highest revision per (trace_id, part)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tracebus.schemas import TraceDocument


class JsonlExporter:
    name = "jsonl"

    def __init__(self, directory: Path, max_file_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self._current: Path | None = None
        self._sequence = 0

    def __repr__(self) -> str:
        return f"JsonlExporter({str(self.directory)!r})"

    async def export(self, documents: Sequence[TraceDocument]) -> None:
        lines = b"".join(d.model_dump_json(exclude_none=True).encode() + b"\n" for d in documents)
        await asyncio.to_thread(self._append, lines)

    def _append(self, lines: bytes) -> None:
        path = self._file_for(len(lines))
        with path.open("ab") as file:
            file.write(lines)
            file.flush()
            # Offsets are committed after this returns: the lines must survive a crash.
            os.fsync(file.fileno())

    def _file_for(self, size: int) -> Path:
        current = self._current
        if current is None or (
            current.exists() and current.stat().st_size + size > self.max_file_bytes
        ):
            self.directory.mkdir(parents=True, exist_ok=True)
            self._sequence += 1
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            current = self.directory / f"traces-{stamp}-{os.getpid()}-{self._sequence:04d}.jsonl"
            self._current = current
        return current

    async def close(self) -> None:
        return None
