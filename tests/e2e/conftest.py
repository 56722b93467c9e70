from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import _psycopg_url


@pytest.fixture()
def dagster_database_url(database_url: str, pg_server: str) -> Iterator[str]:
    """A fresh database for the Dagster instance of a stack started by the test (dropped afterwards)."""
    name = f"si_dagster_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _psycopg_url(pg_server)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(database_url).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `fn` every second until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
