"""How both sandboxes apply a fault decision around a handler: injected latency, an injected error, a request
held and not committed (before handling), and a request held, or answered with an error or a dropped
connection, after its write was committed. The decisions themselves come from the per-tenant/per-account fault
state (`sandboxes/servicetitan/faults.py`); the error body is the provider's (`error_answer(status)`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal, Protocol

from starlette.responses import Response

from .app import DroppedResponse

Outcome = int | str  # a status, or "dropped" / "dropped_before_commit"


class Decision(Protocol):
    @property
    def kind(self) -> Literal["none", "error", "timeout", "commit_then_fail"]: ...

    @property
    def latency_s(self) -> float: ...

    @property
    def status(self) -> int | None: ...


async def before_handling(
    decision: Decision,
    timeout_s: Callable[[], float],
    record: Callable[[Outcome], None],
    error_answer: Callable[[int], Response],
    drops: Callable[[], bool] | None = None,
) -> Response | None:
    """The answer when the fault stops the request before the handler runs (nothing committed), else None.
    `drops()`, if given, decides after the latency whether the connection is cut before handling."""
    if decision.latency_s > 0:
        await asyncio.sleep(decision.latency_s)
    if drops is not None and drops():
        record("dropped_before_commit")
        return DroppedResponse()
    if decision.kind == "error":
        assert decision.status is not None
        record(decision.status)
        return error_answer(decision.status)
    if decision.kind == "timeout" and decision.status is not None:  # held, nothing committed
        await asyncio.sleep(timeout_s())
        record(decision.status)
        return error_answer(decision.status)
    return None


async def after_commit(
    decision: Decision,
    timeout_s: Callable[[], float],
    record: Callable[[Outcome], None],
    error_answer: Callable[[int], Response],
    response: Response,
) -> Response:
    """The handler's `response`, unless the fault holds it, replaces it with an error or drops the connection."""
    if decision.kind == "timeout":
        await asyncio.sleep(timeout_s())
    if decision.kind == "commit_then_fail":
        if decision.status is None:
            record("dropped")
            return DroppedResponse()
        record(decision.status)
        return error_answer(decision.status)
    record(response.status_code)
    return response


__all__ = ["Decision", "Outcome", "after_commit", "before_handling"]
