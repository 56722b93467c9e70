"""Run one delivery batch in its own process (the crash test kills it with SIGKILL mid-request)."""

from __future__ import annotations

import asyncio
import sys
import uuid

from sqlalchemy.ext.asyncio import create_async_engine

from integration_core.delivery.engine import deliver_batch
from integration_core.settings import Settings


async def main(url: str, company: str) -> None:
    settings = Settings(
        DATABASE_URL=url, ENVIRONMENT="test", DELIVERY_REQUEST_TIMEOUT_SECONDS=60
    )  # SECRET_KEY from env
    engine = create_async_engine(url)
    print("starting", flush=True)
    await deliver_batch(engine, settings, uuid.UUID(company), "doomed-run")
    print("finished (should have been killed)", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
