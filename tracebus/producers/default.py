"""The process-wide default client used by `@observe` and `tracebus.get_client()`."""

from __future__ import annotations

import threading
from typing import Any

from tracebus.kafka.connection import KafkaSecurity
from tracebus.producers.client import Client, Redactor

_default: Client | None = None
_lock = threading.Lock()


def configure(
    *, redact: Redactor | None = None, security: KafkaSecurity | None = None, **settings: Any
) -> Client:
    """Replace the default client; settings not given come from `TRACEBUS_*` variables."""
    global _default
    with _lock:
        previous, _default = _default, Client(redact=redact, security=security, **settings)
    if previous is not None:
        previous.close()
    return _default


def get_client() -> Client:
    """The default client, created from `TRACEBUS_*` environment variables on first use."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = Client()
    return _default
