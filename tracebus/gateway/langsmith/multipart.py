"""multipart/form-data bodies as their parts, as LangSmith's `/runs/multipart` reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tracebus.gateway.langsmith.checks import invalid
from tracebus.gateway.protocol import GatewayError

_NAME_PARAMETER = re.compile(r'(?:^|;)\s*name="([^"]*)"')
_BOUNDARY_PARAMETER = re.compile(r'(?:^|;)\s*boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_LENGTH_PARAMETER = re.compile(r";\s*length=(\d+)")


@dataclass(frozen=True)
class Part:
    name: str
    content_type: str  # without a length parameter
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a multipart/form-data body. A part's declared length (Content-Length or the
    `length=` parameter LangSmith also accepts) says where its data ends, so binary attachments
    may contain anything; without one the data ends at the next delimiter."""
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != "multipart/form-data":
        raise GatewayError(415, f"expected multipart/form-data, got {media_type.strip()!r}")
    match = _BOUNDARY_PARAMETER.search(parameters)
    if match is None:
        raise invalid("multipart/form-data without a boundary")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode()
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise invalid("malformed multipart body: no opening delimiter")
    position = start + len(delimiter)
    parts: list[Part] = []
    while not body.startswith(b"--", position):
        if position >= len(body):
            raise invalid("malformed multipart body: no closing delimiter")
        if not body.startswith(b"\r\n", position):
            raise invalid("malformed multipart body: a delimiter is not followed by CRLF")
        head_end = body.find(b"\r\n\r\n", position)
        if head_end < 0:
            raise invalid("malformed multipart body: part headers never end")
        name, part_type, length = _part_head(body[position + 2 : head_end].decode("latin-1"))
        data_start = head_end + 4
        closing = b"\r\n" + delimiter
        if length is not None:
            data_end = data_start + length
            if not body.startswith(closing, data_end):
                raise invalid(f"part {name} declares {length} bytes but no delimiter follows them")
        else:
            data_end = body.find(closing, data_start)
            if data_end < 0:
                raise invalid(f"malformed multipart body: part {name} is never closed")
        parts.append(Part(name, part_type, body[data_start:data_end]))
        position = data_end + len(closing)
    return parts


def _part_head(head: str) -> tuple[str, str, int | None]:
    headers: dict[str, str] = {}
    for line in head.split("\r\n"):
        key, colon, value = line.partition(":")
        if not colon:
            raise invalid(f"malformed multipart part header {line!r}")
        headers[key.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    match = _NAME_PARAMETER.search(disposition.partition(";")[2])
    if not disposition.lower().startswith("form-data") or match is None:
        raise invalid("a multipart part without a form-data name")
    name = match.group(1)
    content_type = headers.get("content-type")
    if not content_type:
        raise invalid(f"part {name} has no Content-Type")
    if "content-encoding" in headers:
        raise invalid(f"part {name} has its own Content-Encoding, which is not allowed")
    declared = headers.get("content-length")
    bare_type = content_type
    if "length=" in content_type:  # the rare parameter form: spare most parts two regexes
        parameter = _LENGTH_PARAMETER.search(content_type)
        if declared is None and parameter is not None:
            declared = parameter.group(1)
        bare_type = _LENGTH_PARAMETER.sub("", content_type)
    if declared is not None and not declared.isdigit():
        raise invalid(f"part {name} has Content-Length {declared!r}")
    return name, bare_type, int(declared) if declared is not None else None
