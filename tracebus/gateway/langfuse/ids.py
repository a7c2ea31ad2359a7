"""Langfuse ids as W3C and contract ids, deterministically: a UUID or 32-hex trace id is its 32
hex digits, a 16-hex observation id stays as it is (what Langfuse's OTel SDKs send), anything
else is hashed (and the original kept in metadata: `langfuse_trace_id`,
`langfuse_observation_id`). Every event id is derived from the envelope id, type and body id, so
a retried batch is applied once."""

from __future__ import annotations

import hashlib
import re

# Matched in full (`fullmatch`), so that a trailing newline is no part of an id.
_HEX_UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_CONTRACT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _digest(domain: str, value: str) -> str:
    return hashlib.sha256(f"langfuse-{domain}\x00{value}".encode()).hexdigest()


def trace_id_for(langfuse_id: str) -> str:
    """The W3C trace id of a Langfuse trace id: a UUID's (or 32-hex id's) own digits, else a
    hash."""
    if _HEX_UUID.fullmatch(langfuse_id):
        digits = langfuse_id.replace("-", "").lower()
        if digits.strip("0"):
            return digits
    return _digest("trace", langfuse_id)[:32]


def observation_id_for(langfuse_id: str) -> str:
    """The W3C span id of a Langfuse observation id: a 16-hex id as it is, else a hash."""
    if _SPAN_ID.fullmatch(langfuse_id) and langfuse_id.strip("0"):
        return langfuse_id
    return _digest("observation", langfuse_id)[:16]


def contract_id(domain: str, langfuse_id: str) -> str:
    """An id for the contract's `[A-Za-z0-9_.:-]{1,64}` fields: as it is when it fits."""
    if _CONTRACT_ID.fullmatch(langfuse_id):
        return langfuse_id
    return f"lf-{_digest(domain, langfuse_id)[:40]}"


def event_id_for(envelope_id: str, event_type: str, body_id: str | None) -> str:
    """The id of the event an ingestion event becomes."""
    key = "\x00".join((envelope_id, event_type, body_id or ""))
    return f"lf-{_digest('event', key)[:40]}"


def is_hashed(w3c_id: str, langfuse_id: str) -> bool:
    """Whether the W3C id is a hash, so the Langfuse id must be kept to be found again."""
    return w3c_id != langfuse_id.replace("-", "").lower()
