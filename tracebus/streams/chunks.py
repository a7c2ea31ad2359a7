"""Table values larger than a changelog message, written as several entries.

A trace's status mark and snapshot grow with the trace (the ids of every published observation,
every event seen): a running trace of some ten thousand observations outgrows Kafka's default
`message.max.bytes`, and a broker refuses the write. Such a value is written as chunks under
keys of their own, `<key>/chunk/<partition>/<generation>/<n>`, then the key itself gets a
header naming them. All of them go to one changelog partition, whose log keeps their order: a
header is never read without its chunks, and the chunks of the value a header replaces are
deleted only after it (a new generation never overwrites them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# No JSON value starts with a NUL byte, so a header is never mistaken for a plain value.
_HEADER = b"\x00tracebus-chunks\x00"
_MARKER = b"/chunk/"


def chunked(
    key: bytes, value: bytes, limit: int, partition: int, generation: int
) -> list[tuple[bytes, bytes]]:
    """The entries that store `key = value` with no value over `limit` bytes: the entry
    itself when it fits, else its chunks and, last, its header."""
    if len(value) <= limit:
        return [(key, value)]
    entries = [
        (b"%s%s%d/%d/%d" % (key, _MARKER, partition, generation, n), value[start : start + limit])
        for n, start in enumerate(range(0, len(value), limit))
    ]
    entries.append((key, _HEADER + b"\n".join(k for k, _ in entries)))
    return entries


def chunk_keys(value: bytes) -> list[bytes]:
    """The keys of the chunks a header names; none for a plain value."""
    if not value.startswith(_HEADER):
        return []
    return value[len(_HEADER) :].split(b"\n")


def chunk_partition(key: bytes) -> int:
    return int(key.rsplit(b"/", 3)[1])


@dataclass
class JoinedEntries:
    """A table's entries with each chunked value joined again."""

    entries: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Per chunked entry, the keys of its chunks.
    chunks: dict[bytes, list[bytes]] = field(default_factory=dict)
    # Chunks no header names: left by a worker that stopped between a value's chunks and its
    # header.
    orphans: list[bytes] = field(default_factory=list)
    # Headers whose chunks are missing from the table (their values are left out).
    broken: list[bytes] = field(default_factory=list)


def joined(entries: Iterable[tuple[bytes, bytes]]) -> JoinedEntries:
    pieces: dict[bytes, bytes] = {}
    plain: list[tuple[bytes, bytes]] = []
    for key, value in entries:
        if _MARKER in key:
            pieces[key] = value
        else:
            plain.append((key, value))
    result = JoinedEntries()
    for key, value in plain:
        names = chunk_keys(value)
        if not names:
            result.entries.append((key, value))
        elif all(name in pieces for name in names):
            result.entries.append((key, b"".join(pieces.pop(name) for name in names)))
            result.chunks[key] = names
        else:
            result.broken.append(key)
    result.orphans = list(pieces)
    return result
