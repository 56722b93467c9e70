"""Token bucket per (app key, tenant), as ServiceTitan's "60 calls per second per application per tenant"."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: int  # capacity
    tokens: float = field(default=-1.0)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = now

    def try_take(self, now: float | None = None) -> tuple[bool, int]:
        """(admitted, retry_after_seconds); `retry_after` is an integer >= 1 when not admitted."""
        now = time.monotonic() if now is None else now
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, 0
        wait = (1.0 - self.tokens) / self.rate if self.rate > 0 else 3600.0
        return False, max(1, math.ceil(wait))

    def reconfigure(self, rate: float, burst: int) -> None:
        self._refill(time.monotonic())
        self.rate = rate
        self.burst = burst
        self.tokens = min(self.tokens, float(burst))
