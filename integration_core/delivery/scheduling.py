"""Which delivery run the run queue starts first: the shortest expected run, and none waits for ever.

Every delivery run goes through Dagster's run queue, which starts the highest `dagster/priority` first and, among
equal priorities, the one submitted first (the sensor submits the longest-waiting companies first). When more
companies have due work than there are run slots (a burst over many companies), that order decides how long each
referral waits for a run. Starting the shortest expected run first makes the mean wait the least it can be: a
company whose ten bookings take 2 s at its tenant's 5 requests/s does not wait behind one whose ten jobs take 8 s,
while the 8-s run starts 2 s later than it would have.

A run's expected length is what its tenant's budget allows: due routings x the requests one delivery sends at
most (its provider's plan without a lookup: `REQUESTS_PER_DELIVERY` of the connection model) / the connection's
requests per second. Priorities are log2 bands of that length, so estimates close to each other tie and keep their
first-come order. Shortest-first alone could keep a long run queued for as long as shorter ones keep coming: a run
queued for `AGED_AFTER_SECONDS` is lifted above every new one (the sensor re-tags it at its next tick), so none
waits much longer than that plus the aged runs queued before it.

Priority ladder (higher starts first): retries and re-executions 20, aged runs 19, new runs 18 (shortest) down to
10 (longest); reconcile, status pulls and checks keep Dagster's default 0.
"""

from __future__ import annotations

import math

from integration_core.providers import registry

RETRY_PRIORITY = 20  # a retry or re-execution: its work already waited once
AGED_PRIORITY = 19  # queued for AGED_AFTER_SECONDS
SHORTEST_PRIORITY = 18  # a new run expected to take under a second
LONGEST_PRIORITY = 10  # a new run expected to take 2^8 - 1 = 255 s or more
AGED_AFTER_SECONDS = 30.0


def requests_per_delivery(provider: str, delivery_mode: str) -> int:
    """The requests one delivery of this provider and mode sends at most (1 for a mode the model does not list)."""
    try:
        model = registry.get(provider).model
    except registry.UnknownProvider:
        return 1
    per_mode: dict[str, int] = getattr(model, "REQUESTS_PER_DELIVERY", {})
    return per_mode.get(delivery_mode, 1)


def expected_run_seconds(*, due: int, provider: str, delivery_mode: str, rate_per_second: float) -> float:
    """How long delivering `due` routings takes at the connection's request rate (the run's floor: its budget)."""
    return due * requests_per_delivery(provider, delivery_mode) / max(rate_per_second, 1e-9)


def run_priority(expected_seconds: float) -> int:
    """The `dagster/priority` of a new delivery run expected to take `expected_seconds`: 18 under 1 s, one less
    for each doubling (17 under 3 s, 16 under 7 s, ...), 10 from 255 s on."""
    band = int(math.log2(1.0 + max(0.0, expected_seconds)))
    return max(LONGEST_PRIORITY, SHORTEST_PRIORITY - band)


def queued_priority(current: str | None, *, retry: bool, queued_for_seconds: float) -> int | None:
    """The priority a queued delivery run should be raised to now (its tag `current`), or None to leave it:
    retries and re-executions go to RETRY_PRIORITY, runs queued AGED_AFTER_SECONDS or longer to AGED_PRIORITY.
    A priority is never lowered (an operator may have raised one)."""
    try:
        now = int(current) if current is not None else 0
    except ValueError:
        now = 0
    wanted = RETRY_PRIORITY if retry else AGED_PRIORITY if queued_for_seconds >= AGED_AFTER_SECONDS else None
    return wanted if wanted is not None and now < wanted else None
