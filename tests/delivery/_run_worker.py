"""A delivery run in its own process, as a Dagster run worker runs it: `run_with_leases` around `drain`.

SIGTERM becomes an exception in the main thread, as in a Dagster run worker (a cancel from the UI, or a stop):
the leases test checks what the run gives back then, and what a SIGKILL leaves for run monitoring."""

from __future__ import annotations

import signal
import sys
import uuid
from types import FrameType

from integration_core.delivery.engine import drain
from integration_core.delivery.runs import run_with_leases
from integration_core.settings import Settings


class Interrupted(BaseException):
    """What Dagster's DagsterExecutionInterruptedError is to a run: not an Exception, it ends the run."""


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise Interrupted


def main(url: str, company: str, run_id: str) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    settings = Settings(DATABASE_URL=url, ENVIRONMENT="test", DELIVERY_REQUEST_TIMEOUT_SECONDS=60)  # SECRET_KEY: env
    print("starting", flush=True)
    run_with_leases(
        settings, run_id, lambda engine, s: drain(engine, s, uuid.UUID(company), run_id, time_budget_seconds=120)
    )
    print("finished (should have been stopped)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
