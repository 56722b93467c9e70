"""The one resource: configuration in, core objects out. No business logic here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import dagster as dg
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from integration_core.db.engine import oneshot_engine, resolve_database_url, session_scope
from integration_core.delivery import runs
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

    def engine(self) -> Engine:
        """No pooled connection kept: run workers, the sensor and schedules use it now and then."""
        return oneshot_engine(resolve_database_url(self.settings()))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.engine()) as session:
            yield session

    def run_async(self, fn: Callable[[AsyncEngine, Settings], Awaitable[T]], *, lease_owner: str | None = None) -> T:
        """Run an engine coroutine `fn(engine, settings)` on a fresh event loop with a run-sized engine
        (RUN_DB_POOL_SIZE). With `lease_owner` (the run id), whatever happens, the routings the run still holds
        are released afterwards (integration_core.delivery.runs)."""
        settings = self.settings()
        if lease_owner is None:
            return runs.run_async(settings, fn)
        return runs.run_with_leases(settings, lease_owner, fn)
