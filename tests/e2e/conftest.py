from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.support.db import psycopg_url


@pytest.fixture()
def dagster_database_url(database_url: str, pg_server: str) -> Iterator[str]:
    """A fresh database for the Dagster instance of a stack started by the test (dropped afterwards)."""
    name = f"si_dagster_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg_url(pg_server)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(database_url).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
