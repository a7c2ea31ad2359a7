"""Per-key request rate limits: a token bucket per caller."""

from __future__ import annotations

import math
import time

from tracebus.gateway.protocol import Caller, GatewayError


class RateLimiter:
    def __init__(self, per_second: float, burst: int) -> None:
        self._rate = per_second
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key name → (tokens, updated at)

    def admit(self, caller: Caller) -> None:
        """Take one token for `caller`; GatewayError 429 with Retry-After when none is left."""
        if self._rate <= 0:
            return
        now = time.monotonic()
        tokens, updated = self._buckets.get(caller.key_name, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)
        if tokens < 1:
            self._buckets[caller.key_name] = (tokens, now)
            wait = (1 - tokens) / self._rate
            raise GatewayError(
                429,
                f"rate limit exceeded: {self._rate:g} requests/s per API key "
                f"(burst {self._burst:g})",
                retry_after_s=max(1, math.ceil(wait)),
            )
        self._buckets[caller.key_name] = (tokens - 1, now)
