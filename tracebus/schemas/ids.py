"""W3C trace-context identifiers: generation, validation and the `traceparent` header."""

from __future__ import annotations

import random
import re
from typing import NamedTuple

TRACE_ID_PATTERN = r"^[0-9a-f]{32}$"
OBSERVATION_ID_PATTERN = r"^[0-9a-f]{16}$"
INVALID_TRACE_ID = "0" * 32
INVALID_OBSERVATION_ID = "0" * 16

_TRACE_ID_RE = re.compile(TRACE_ID_PATTERN)
_OBSERVATION_ID_RE = re.compile(OBSERVATION_ID_PATTERN)
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

# `random` is re-seeded in forked children by CPython, so ids never repeat across pre-fork workers.
_random_bits = random.getrandbits


def new_trace_id() -> str:
    return f"{_random_bits(128) or 1:032x}"


def new_observation_id() -> str:
    return f"{_random_bits(64) or 1:016x}"


def new_event_id() -> str:
    return f"{_random_bits(128) or 1:032x}"


def trace_id_problem(value: object) -> str | None:
    """Why `value` is not a W3C trace id, or None when it is one."""
    if not isinstance(value, str) or not _TRACE_ID_RE.match(value):
        return "a trace id is 32 lowercase hex characters"
    if value == INVALID_TRACE_ID:
        return "the all-zero trace id is invalid in W3C trace context"
    return None


def observation_id_problem(value: object) -> str | None:
    """Why `value` is not a W3C span id, or None when it is one."""
    if not isinstance(value, str) or not _OBSERVATION_ID_RE.match(value):
        return "an observation id is 16 lowercase hex characters (a W3C span id)"
    if value == INVALID_OBSERVATION_ID:
        return "the all-zero span id is invalid in W3C trace context"
    return None


class TraceParent(NamedTuple):
    trace_id: str
    parent_observation_id: str
    sampled: bool

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_observation_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(header: str) -> TraceParent:
    """Parse a W3C `traceparent` header; raises ValueError naming what is wrong."""
    match = _TRACEPARENT_RE.match(header.strip().lower())
    if match is None:
        raise ValueError(f"traceparent {header!r} is not 'version-traceid32-spanid16-flags' in hex")
    version, trace_id, span_id, flags = match.groups()
    if version == "ff":
        raise ValueError("traceparent version ff is forbidden by W3C trace context")
    for problem in (trace_id_problem(trace_id), observation_id_problem(span_id)):
        if problem:
            raise ValueError(f"traceparent {header!r}: {problem}")
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 0x01))


def format_traceparent(trace_id: str, observation_id: str, sampled: bool = True) -> str:
    return TraceParent(trace_id, observation_id, sampled).header()
