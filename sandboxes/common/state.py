"""State pieces both sandboxes share: the lifecycle error, the strictly increasing clock, and per-tenant /
per-account request statistics (statuses per route, 429s, admitted-request times for the rate check)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

ACCEPTED_TIMES_LIMIT = 200_000


class TransitionError(ValueError):
    """A status change the record's lifecycle does not allow (control API answers 409)."""


class Clock:
    """UTC now, strictly increasing, so change cursors (`modifiedOn`, `updated_at`) never see two changes at the
    same instant."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        now = datetime.now(UTC)
        if now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


@dataclass
class RequestStats:
    requests: dict[str, Counter[str]] = field(default_factory=dict)  # "METHOD /template" -> status -> n
    rate_limited: int = 0
    accepted: deque[float] = field(default_factory=lambda: deque(maxlen=ACCEPTED_TIMES_LIMIT))

    def record(self, route: str, status: int | str) -> None:
        self.requests.setdefault(route, Counter())[str(status)] += 1

    def max_in_window(self, window_s: float = 1.0) -> int:
        """The most requests admitted within any `window_s` seconds."""
        times = list(self.accepted)
        best = lo = 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


__all__ = ["ACCEPTED_TIMES_LIMIT", "Clock", "RequestStats", "TransitionError"]
