"""Shared fixtures: a real PostgreSQL for every test session.

With `DATABASE_URL` set, that server is used; otherwise the embedded server under `.data/` (started if needed,
stopped at the end only if this session started it). Each session gets its own freshly migrated database, and
each test that touches the database starts from empty tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from integration_core.db import embedded
from integration_core.db.engine import normalize_url
from integration_core.db.models import Base
from integration_core.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def _server_url() -> tuple[str, bool]:
    """(admin URL on the `postgres` database, whether this session started the server)."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return normalize_url(
            str(make_url(normalize_url(configured)).set(database="postgres").render_as_string(False))
        ), False
    data_dir = Path(os.environ.get("DATA_DIR", ROOT / ".data"))
    was_running = embedded.server_pid(data_dir) is not None
    socket_dir = embedded.ensure_server(data_dir)
    return f"postgresql+psycopg://postgres:@/postgres?host={socket_dir}", not was_running


def _psycopg_url(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    url, started_here = _server_url()
    yield url
    if started_here:
        embedded.stop_server(Path(os.environ.get("DATA_DIR", ROOT / ".data")))


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    name = f"si_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _psycopg_url(pg_server)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    command.upgrade(alembic_config(url), "head")
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    _clear_caches()
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous
        _clear_caches()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _clear_caches() -> None:
    from integration_core.db import engine as engine_mod

    get_settings.cache_clear()
    engine_mod.database_url.cache_clear()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = create_engine(database_url, pool_size=25, max_overflow=10)
    yield eng
    eng.dispose()


TABLES = ", ".join(t.name for t in Base.metadata.sorted_tables)


@pytest.fixture()
def db(engine: Engine) -> Iterator[Engine]:
    """The session database with every table empty at the start of the test."""
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    yield engine


# --- domain fixtures ---------------------------------------------------------------------------------------

TEST_API_TOKEN = "test-api-token-0123456789"
TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"


@pytest.fixture()
def settings(database_url: str):
    from integration_core.settings import Settings

    return Settings(
        DATABASE_URL=database_url,
        API_TOKEN=TEST_API_TOKEN,
        SECRET_KEY=TEST_SECRET_KEY,
        ENVIRONMENT="test",
        SERVICETITAN_SANDBOX_URL="http://127.0.0.1:9",
        DAGSTER_WEBSERVER_URL="http://127.0.0.1:9",  # never a stack that happens to run on this machine
    )


@pytest.fixture()
def session_factory(db: Engine):
    from integration_core.db.engine import session_factory as factory

    return factory(db)


@pytest.fixture()
def demo(db: Engine, settings):
    """The demo world (companies, technicians, sandbox connections) in the test database."""
    from integration_core.db.engine import session_scope
    from integration_core.local.seed import seed_demo

    with session_scope(db) as session:
        return seed_demo(session, secret_key=TEST_SECRET_KEY, sandbox_url=settings.servicetitan_sandbox_url)


@pytest.fixture()
def api(db: Engine, settings) -> Iterator[str]:
    """The HTTP API served over loopback; yields its base URL."""
    from integration_core.api.app import create_app
    from integration_core.local.http_server import serve_in_thread

    with serve_in_thread(create_app(settings, engine=db)) as url:
        yield url


@pytest.fixture()
def client(api: str):
    import httpx

    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}, timeout=30) as c:
        yield c
