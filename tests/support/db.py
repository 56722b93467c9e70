"""The PostgreSQL server a test session uses, and alembic on a test database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic.config import Config
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from integration_core.db import embedded
from integration_core.db.engine import normalize_url
from integration_core.db.models import Base
from tests.support.config import ROOT

TABLES = ", ".join(t.name for t in Base.metadata.sorted_tables)


def data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR", ROOT / ".data"))


def server_url() -> tuple[str, bool]:
    """(admin URL on the `postgres` database, whether this session started the server).

    With `DATABASE_URL` set, that server; otherwise the embedded server under `.data/` (started if needed)."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return normalize_url(
            str(make_url(normalize_url(configured)).set(database="postgres").render_as_string(False))
        ), False
    was_running = embedded.server_pid(data_dir()) is not None
    socket_dir = embedded.ensure_server(data_dir())
    return f"postgresql+psycopg://postgres:@/postgres?host={socket_dir}", not was_running


def psycopg_url(sqlalchemy_url: str) -> str:
    """The libpq form of a SQLAlchemy URL (for psycopg, psql, subprocesses)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


@contextmanager
def scratch_database(pg_server: str, prefix: str) -> Iterator[str]:
    """An empty database ``<prefix>_<pid>_<random>`` on the test server (its SQLAlchemy URL), dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg_url(pg_server)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def routing_indexes(engine: Engine) -> dict[str, tuple[str, bool]]:
    """The `ix_job_routings_*` indexes of a database: name -> (definition, valid) (the migration tests)."""
    with engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT i.relname, pg_get_indexdef(i.oid), x.indisvalid FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                "WHERE t.relname = 'job_routings' AND i.relname LIKE 'ix_job_routings_%'"
            )
        ).all()
    return {str(name): (str(definition), bool(valid)) for name, definition, valid in rows}


def raw_job(conn: Connection, referrer: uuid.UUID, technician: uuid.UUID, summary: str) -> uuid.UUID:
    """A job inserted in raw SQL (the migration tests: its columns are the same at every revision they start from)."""
    job: uuid.UUID = conn.execute(
        text(
            "INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
            "created_by_company_id, created_by_technician_id) "
            "VALUES (:s, '1 Main St', 'Austin', 'TX', '78701', 'Owner', '5125550100', :r, :t) RETURNING id"
        ),
        {"s": summary, "r": referrer, "t": technician},
    ).scalar_one()
    return job
