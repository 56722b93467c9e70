"""Engines and sessions. One URL for everything; the embedded server when `DATABASE_URL` is unset."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

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


def connect_args(settings: Settings | None = None) -> dict[str, object]:
    """psycopg options. Behind PgBouncer in transaction pooling a server connection changes between
    transactions, so psycopg must not prepare statements on it (`prepare_threshold=None`)."""
    settings = settings or get_settings()
    return {"prepare_threshold": None} if settings.database_pgbouncer else {}


def pool_options(settings: Settings | None = None) -> dict[str, object]:
    """The bounded pool of one engine of the API, `si`, the code server and the daemon (docs/connections.md)."""
    settings = settings or get_settings()
    return {
        "pool_pre_ping": True,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
        "connect_args": connect_args(settings),
    }


def run_engine(settings: Settings) -> AsyncEngine:
    """The async engine of one delivery run: RUN_DB_POOL_SIZE connections, no overflow. Coroutines of the run
    queue for a connection (every transaction of the engine is one short statement or two), so 32 requests in
    flight need only a handful of connections."""
    return create_async_engine(
        resolve_database_url(settings),
        pool_pre_ping=True,
        pool_size=settings.run_db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=connect_args(settings),
    )


@lru_cache(maxsize=8)
def oneshot_engine(url: str) -> Engine:
    """An engine that keeps no connection open between uses (NullPool): for processes that touch the database
    now and then — a run worker before and after its batch, the sensor, the run launcher — so that they count
    in the connection budget only while they use it."""
    return create_engine(url, poolclass=NullPool, connect_args=connect_args())


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    return create_engine(url, **pool_options())


@lru_cache(maxsize=8)
def _async_engine_for(url: str) -> AsyncEngine:
    return create_async_engine(url, **pool_options())


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
