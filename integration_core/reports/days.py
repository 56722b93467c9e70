"""Reporting days: calendar days in the reporting time zone (REPORTING_TIMEZONE), as UTC bounds."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["day_bounds", "days_between"]


def day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of `day` in `tz`, in UTC. A day is 23 or 25 hours long across a DST change."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def days_between(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included (empty when `last` is before `first`)."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
