"""Reading a request body within the size limits, decompressed."""

from __future__ import annotations

import zlib

import zstandard
from aiohttp import web

from tracebus.gateway.protocol import GatewayError

_CHUNK = 64 * 1024


async def read_body(request: web.Request, max_bytes: int, max_decoded_bytes: int) -> bytes:
    """The body as sent, refused with 413 past `max_bytes`, then decoded per Content-Encoding
    (gzip, deflate, zstd) and refused with 413 past `max_decoded_bytes` — decoding stops at the
    limit, so a small compressed bomb cannot fill memory."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise _too_large(f"request body of {declared} bytes", max_bytes)
    raw = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        raw += chunk
        if len(raw) > max_bytes:
            raise _too_large("request body", max_bytes)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return bytes(raw)
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _inflate(bytes(raw), encoding, max_decoded_bytes)
    if encoding == "zstd":
        return _unzstd(bytes(raw), max_decoded_bytes)
    raise GatewayError(415, f"unsupported Content-Encoding {encoding!r}: use gzip, deflate or zstd")


def _inflate(data: bytes, encoding: str, limit: int) -> bytes:
    # wbits 47 reads gzip or zlib headers; raw deflate is what some clients mean by "deflate".
    wbits = 31 if encoding != "deflate" else (15 if data[:1] == b"\x78" else -15)
    decoder = zlib.decompressobj(wbits)
    try:
        decoded = decoder.decompress(data, limit + 1)
    except zlib.error as error:
        raise GatewayError(400, f"body is not valid {encoding}: {error}") from None
    if len(decoded) > limit:
        raise _too_large("decompressed request body", limit)
    if not decoder.eof:
        raise GatewayError(400, f"body is not valid {encoding}: truncated stream")
    return decoded


def _unzstd(data: bytes, limit: int) -> bytes:
    try:
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
            decoded = reader.read(limit + 1)
    except zstandard.ZstdError as error:
        raise GatewayError(400, f"body is not valid zstd: {error}") from None
    if len(decoded) > limit:
        raise _too_large("decompressed request body", limit)
    return decoded


def _too_large(what: str, limit: int) -> GatewayError:
    return GatewayError(413, f"{what} exceeds the gateway's limit of {limit} bytes")
