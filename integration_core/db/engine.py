"""Engines and sessions. One URL for everything; the embedded server when `DATABASE_URL` is unset."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from integration_core.db import embedded
from integration_core.settings import Settings, get_settings


def normalize_url(url: str) -> str:
    """Accept `postgres://` / `postgresql://` URLs and pin the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    else:
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got driver {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


def resolve_database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return normalize_url(settings.database_url)
    return embedded.embedded_url(settings.data_dir, settings.embedded_db_name)


def dagster_storage_url(settings: Settings | None = None) -> str:
    """Dagster's own storage: `DAGSTER_DATABASE_URL`, else a database named `dagster` on the same server
    (created if missing). psycopg2 scheme, which dagster-postgres drives (see dagster-notes §6)."""
    settings = settings or get_settings()
    if settings.dagster_database_url:
        url = make_url(normalize_url(settings.dagster_database_url))
    else:
        app_url = make_url(resolve_database_url(settings))
        url = app_url.set(database="dagster")
        _ensure_database(app_url, "dagster")
    return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def _ensure_database(app_url: URL, name: str) -> None:
    import psycopg

    admin = app_url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@lru_cache(maxsize=8)
def _async_engine_for(url: str) -> AsyncEngine:
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@lru_cache(maxsize=1)
def database_url() -> str:
    return resolve_database_url()


def get_engine(url: str | None = None) -> Engine:
    return _engine_for(url or database_url())


def get_async_engine(url: str | None = None) -> AsyncEngine:
    return _async_engine_for(url or database_url())


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(engine or get_engine(), expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with session_factory(engine)() as session, session.begin():
        yield session
