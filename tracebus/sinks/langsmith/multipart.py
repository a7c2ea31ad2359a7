"""The body of `POST /runs/multipart`, part for part as the langsmith SDK (0.15) encodes it.

A run is a `post.<id>` part holding its small fields plus one `post.<id>.<field>` part per big
field; feedback is one `feedback.<id>` part. Every part is JSON with Content-Type and
Content-Length headers (the server rejects parts without them)."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

# The fields the SDK moves out of the run part, in the SDK's order.
OUT_OF_BAND_FIELDS = ("inputs", "outputs", "events", "extra", "error", "serialized")
JSON_CONTENT_TYPE = "application/json"

Compression = Literal["gzip"] | None


@dataclass(frozen=True)
class Part:
    name: str
    data: bytes


@dataclass(frozen=True)
class Body:
    content: bytes
    headers: dict[str, str]
    uncompressed_size: int


def run_parts(run: Mapping[str, Any]) -> list[Part]:
    """`post.<id>` with the run minus its big fields, then one part per big field."""
    small = {key: value for key, value in run.items() if key not in OUT_OF_BAND_FIELDS}
    parts = [Part(f"post.{run['id']}", _json(small))]
    for field in OUT_OF_BAND_FIELDS:
        value = run.get(field)
        if value is not None:
            parts.append(Part(f"post.{run['id']}.{field}", _json(value)))
    return parts


def feedback_part(feedback: Mapping[str, Any]) -> Part:
    return Part(f"feedback.{feedback['id']}", _json(feedback))


def encode(parts: Iterable[Part], boundary: str) -> bytes:
    """multipart/form-data exactly as requests-toolbelt writes it for the SDK."""
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{part.name}"\r\n'
                f"Content-Type: {JSON_CONTENT_TYPE}\r\n"
                f"Content-Length: {len(part.data)}\r\n"
                "\r\n"
            ).encode()
        )
        chunks.append(part.data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def request_body(parts: Sequence[Part], compression: Compression) -> Body:
    """The encoded request with its content headers; gzip applies to the whole body, since
    per-part Content-Encoding is not allowed."""
    boundary = uuid.uuid4().hex
    content = encode(parts, boundary)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    uncompressed_size = len(content)
    if compression == "gzip":
        # Level 1: trace JSON still shrinks several-fold, at a fraction of the CPU of level 9.
        content = gzip.compress(content, compresslevel=1, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Body(content, headers, uncompressed_size)


def _json(value: Any) -> bytes:
    return orjson.dumps(value)
