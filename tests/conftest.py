"""Shared fixtures (helpers live in tests/support/): a real PostgreSQL for every test session, and one
ServiceTitan sandbox server per session (`sandbox`, a `tests.support.sandbox.SandboxHandle`).

With `DATABASE_URL` set, that server is used; otherwise the embedded server under `.data/` (started if needed,
stopped at the end only if this session started it). Each session gets its own freshly migrated database, and
each test that touches the database starts from empty tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# helpers imported from tests.support report failed asserts in detail, as the tests' own asserts do
pytest.register_assert_rewrite("tests.support")

import httpx  # noqa: E402
import psycopg  # noqa: E402
from alembic import command  # noqa: E402
from sqlalchemy import Engine, create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from integration_core.db import embedded  # noqa: E402
from integration_core.local.seed import SeedSummary  # noqa: E402
from integration_core.settings import Settings  # noqa: E402
from tests.support.config import TEST_API_TOKEN, TEST_SECRET_KEY, base_settings, clear_caches  # noqa: E402
from tests.support.config import engine_settings as _engine_settings  # noqa: E402
from tests.support.db import TABLES, alembic_config, data_dir, psycopg_url, server_url  # noqa: E402
from tests.support.sandbox import SandboxHandle, serve_sandbox  # noqa: E402
from tests.support.world import World, make_world  # noqa: E402

pytest_plugins = ["tests.support.fixtures_servicetitan"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    url, started_here = server_url()
    yield url
    if started_here:
        embedded.stop_server(data_dir())


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    name = f"si_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg_url(pg_server)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    command.upgrade(alembic_config(url), "head")
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    clear_caches()
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous
        clear_caches()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = create_engine(database_url, pool_size=25, max_overflow=10)
    yield eng
    eng.dispose()


@pytest.fixture()
def db(engine: Engine) -> Iterator[Engine]:
    """The session database with every table empty at the start of the test."""
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    yield engine


# --- domain fixtures ---------------------------------------------------------------------------------------


@pytest.fixture()
def settings(database_url: str) -> Settings:
    return base_settings(database_url)


@pytest.fixture()
def engine_settings(database_url: str) -> Settings:
    """Short timers so faults resolve within a test; everything else as in production."""
    return _engine_settings(database_url)


@pytest.fixture()
def session_factory(db: Engine) -> sessionmaker[Session]:
    from integration_core.db.engine import session_factory as factory

    return factory(db)


@pytest.fixture()
def demo(db: Engine, settings: Settings) -> SeedSummary:
    """The demo world (companies, technicians, sandbox connections) in the test database."""
    from integration_core.db.engine import session_scope
    from integration_core.local.seed import seed_demo

    with session_scope(db) as session:
        return seed_demo(session, secret_key=TEST_SECRET_KEY, sandbox_url=settings.servicetitan_sandbox_url)


@pytest.fixture()
def world(db: Engine) -> World:
    """A referring company with a technician (routings are created on its behalf)."""
    return make_world(db)


@pytest.fixture()
def api(db: Engine, settings: Settings) -> Iterator[str]:
    """The HTTP API served over loopback; yields its base URL."""
    from integration_core.api.app import create_app
    from integration_core.local.http_server import serve_in_thread

    with serve_in_thread(create_app(settings, engine=db)) as url:
        yield url


@pytest.fixture()
def client(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}, timeout=30) as c:
        yield c


# --- the ServiceTitan sandbox ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """One sandbox server (demo tenants seeded) in its own process for the session."""
    with serve_sandbox() as url:
        yield url


@pytest.fixture()
def sandbox(sandbox_url: str) -> Iterator[SandboxHandle]:
    """The session's sandbox in its seeded state (records, counters, faults, limits reset; runtime tenants
    dropped) before the test. Tests create fresh tenants or use the demo ones."""
    with httpx.Client(base_url=sandbox_url, timeout=30) as control:
        handle = SandboxHandle(sandbox_url, control)
        handle.reset()
        yield handle
