"""Running the async delivery engine from a sync test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

T = TypeVar("T")


def run(database_url: str, fn: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run an async test body with an async engine bound to its own event loop."""

    async def main() -> T:
        engine = create_async_engine(database_url, pool_size=40, max_overflow=20)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())
