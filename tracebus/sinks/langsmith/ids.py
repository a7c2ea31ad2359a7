"""Deterministic LangSmith identifiers for W3C trace and span ids.

LangSmith wants UUIDs for runs, traces and feedback, and the trace id must be the root run's id.
Every id here is a pure function of the trace, so a replay or a later revision of the same trace
names the same runs and LangSmith answers 409 instead of storing duplicates."""

from __future__ import annotations

import hashlib
import uuid

_UUID7_VERSION = 0x7
_RFC4122_VARIANT = 0b10
_MAX_UNIX_MS = (1 << 48) - 1
# A fixed namespace so feedback ids are stable across processes and releases.
_FEEDBACK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://tracebus.dev/langsmith/feedback")


def trace_uuid(trace_id: str) -> uuid.UUID:
    """The 16 bytes of the W3C trace id read as a UUID; also the root run's id.

    This is how LangSmith's own OTel bridge relates the two (trace id = UUID as a 128-bit
    integer), so the same trace is recognisable in both worlds by its hex digits."""
    return uuid.UUID(hex=trace_id)


def run_uuid(trace_id: str, observation_id: str, start_time_unix_nano: int) -> uuid.UUID:
    """A UUIDv7 for a non-root observation: 48-bit start in ms, the other 74 bits from a hash.

    LangSmith prefers v7 (time-ordered) ids; the hash of (trace id, observation id) makes the
    id stable across replays while span ids reused in another trace still give other runs."""
    unix_ms = min(start_time_unix_nano // 1_000_000, _MAX_UNIX_MS)
    digest = hashlib.sha256(f"{trace_id}:{observation_id}".encode()).digest()
    random_bits = int.from_bytes(digest[:10], "big")  # 80 bits, 74 of them used
    rand_a = random_bits >> 68  # 12 bits
    rand_b = random_bits & ((1 << 62) - 1)  # 62 bits
    value = (
        (unix_ms << 80)
        | (_UUID7_VERSION << 76)
        | (rand_a << 64)
        | (_RFC4122_VARIANT << 62)
        | rand_b
    )
    return uuid.UUID(int=value)


def feedback_uuid(trace_id: str, score_id: str) -> uuid.UUID:
    """A UUIDv5 of trace and score id: sending the same score again names the same feedback,
    and equal score ids of different traces never collide (feedback ids are workspace-wide)."""
    return uuid.uuid5(_FEEDBACK_NAMESPACE, f"{trace_id}:{score_id}")
