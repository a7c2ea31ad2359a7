"""Environment names as Langfuse stores them."""

from __future__ import annotations

import re

_VALID = re.compile(r"[a-z0-9_-]{1,40}")
_RESERVED_PREFIX = "langfuse"
DEFAULT_ENVIRONMENT = "default"


def langfuse_environment(name: str | None) -> str | None:
    """`name` normalised the way Langfuse's OTLP ingestion does, or None when there is none.

    Normalising here rather than leaving it to the server keeps spans and scores of one trace in
    the same environment: the scores API rejects a name the OTLP path would silently rewrite."""
    if name is None:
        return None
    normalised = name.lower()
    while normalised.startswith(_RESERVED_PREFIX):
        normalised = normalised.removeprefix(_RESERVED_PREFIX)
    normalised = normalised[:40]
    return normalised if _VALID.fullmatch(normalised) else DEFAULT_ENVIRONMENT
