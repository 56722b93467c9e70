"""Migration 0008: the generated ids are UUID version 7 — creation time first, so later rows sort after earlier
ones — on this server (PostgreSQL 18's `uuidv7()` on the embedded one, the SQL version on older servers: CI runs
both), and downgrade gives back version-4 ids."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Connection, create_engine, text

from tests.support.db import alembic_config, scratch_database

TABLES = ("companies", "technicians", "provider_connections", "jobs", "job_routings")


@pytest.fixture()
def scratch_url(pg_server: str) -> Iterator[str]:
    with scratch_database(pg_server, "si_mig8") as url:
        yield url


def _insert_one_of_each(conn: Connection, n: int) -> dict[str, uuid.UUID]:
    """A row in each table with a generated id (the database chooses every id); returns table -> id."""
    ids: dict[str, uuid.UUID] = {}
    ids["companies"] = conn.execute(
        text("INSERT INTO companies (name) VALUES (:n) RETURNING id"), {"n": f"C{n}"}
    ).one()[0]
    ids["technicians"] = conn.execute(
        text("INSERT INTO technicians (company_id, name) VALUES (:c, 'T') RETURNING id"), {"c": ids["companies"]}
    ).one()[0]
    ids["provider_connections"] = conn.execute(
        text(
            "INSERT INTO provider_connections (company_id, account_id, settings) "
            "VALUES (:c, :a, '{\"booking_provider_id\": 1}') RETURNING id"
        ),
        {"c": ids["companies"], "a": str(1000 + n)},
    ).one()[0]
    ids["jobs"] = conn.execute(
        text(
            "INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
            "created_by_company_id, created_by_technician_id) "
            "VALUES ('Leak', '1 Main St', 'Austin', 'TX', '78701', 'Owner', '5125550100', :c, :t) RETURNING id"
        ),
        {"c": ids["companies"], "t": ids["technicians"]},
    ).one()[0]
    ids["job_routings"] = conn.execute(
        text("INSERT INTO job_routings (job_id, receiving_company_id) VALUES (:j, :c) RETURNING id"),
        {"j": ids["jobs"], "c": ids["companies"]},
    ).one()[0]
    return ids


def test_generated_ids_are_version_7_and_ordered_by_creation(scratch_url: str) -> None:
    cfg = alembic_config(scratch_url)
    command.upgrade(cfg, "head")
    engine = create_engine(scratch_url)
    try:
        with engine.begin() as conn:
            first = _insert_one_of_each(conn, 1)
        time.sleep(0.005)  # the next millisecond at least
        with engine.begin() as conn:
            second = _insert_one_of_each(conn, 2)
            # PostgreSQL orders uuids by their bytes: a later row's id sorts after an earlier one's
            later: bool = conn.execute(
                text("SELECT bool_and(b > a) FROM unnest(CAST(:a AS uuid[]), CAST(:b AS uuid[])) AS t(a, b)"),
                {"a": [first[t] for t in TABLES], "b": [second[t] for t in TABLES]},
            ).scalar_one()
            now_ms = conn.execute(text("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint")).one()[0]
        assert later is True
        for ids in (first, second):
            for table, value in ids.items():
                assert (value.version, value.variant) == (7, uuid.RFC_4122), table
                assert 0 <= now_ms - (value.int >> 80) < 60_000, table  # the first 48 bits: creation time in ms
        # distinct even when many are made at once (random bits below the millisecond)
        with engine.connect() as conn:
            distinct: int = conn.execute(
                text("SELECT count(DISTINCT time_ordered_uuid()) FROM generate_series(1, 10000)")
            ).scalar_one()
        assert distinct == 10000

        command.downgrade(cfg, "0007")
        with engine.begin() as conn:
            old = _insert_one_of_each(conn, 3)
            assert conn.execute(text("SELECT to_regprocedure('time_ordered_uuid()')")).scalar() is None
        assert {v.version for v in old.values()} == {4}
        command.upgrade(cfg, "head")
        with engine.begin() as conn:
            again = _insert_one_of_each(conn, 4)
        assert {v.version for v in again.values()} == {7}
    finally:
        engine.dispose()
