"""Running the async delivery engine from a sync test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

T = TypeVar("T")


def run(database_url: str, fn: Callable[[AsyncEngine], Awaitable[T]], **engine_options: Any) -> T:
    """Run an async test body with an async engine bound to its own event loop (a pool of 40 + 20 unless
    ``engine_options`` say otherwise)."""

    async def main() -> T:
        engine = create_async_engine(database_url, **{"pool_size": 40, "max_overflow": 20, **engine_options})
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())
