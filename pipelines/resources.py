"""The one resource: configuration in, core objects out. No business logic here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import dagster as dg
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from integration_core.db.engine import resolve_database_url, session_scope
from integration_core.settings import Settings, get_settings

T = TypeVar("T")


class IntegrationResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Settings come from the environment like every other process of the service (pydantic-settings);
    `database_url` and `secret_key` can be handed in explicitly (as `dg.EnvVar`, so the UI never shows them)."""

    database_url: str | None = None
    secret_key: str | None = None

    def settings(self) -> Settings:
        base = get_settings()
        overrides: dict[str, object] = {}
        if self.database_url:
            overrides["database_url"] = self.database_url
        if self.secret_key:
            from pydantic import SecretStr

            overrides["secret_key"] = SecretStr(self.secret_key)
        return base.model_copy(update=overrides) if overrides else base

    @contextmanager
    def session(self) -> Iterator[Session]:
        from integration_core.db.engine import get_engine

        with session_scope(get_engine(resolve_database_url(self.settings()))) as session:
            yield session

    def run_async(self, fn: Callable[..., Awaitable[T]]) -> T:
        """Run an engine coroutine `fn(engine, settings)` on a fresh event loop with its own async engine."""
        settings = self.settings()

        async def main() -> T:
            engine = create_async_engine(resolve_database_url(settings), pool_size=40, max_overflow=20)
            try:
                return await fn(engine, settings)
            finally:
                await engine.dispose()

        return asyncio.run(main())
