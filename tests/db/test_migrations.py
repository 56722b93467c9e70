from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from integration_core.db.models import Base
from tests.support.db import alembic_config, scratch_database


@pytest.fixture()
def empty_database(pg_server: str):
    with scratch_database(pg_server, "si_mig") as url:
        yield url


def test_upgrade_downgrade_upgrade_on_empty_database(empty_database: str) -> None:
    cfg = alembic_config(empty_database)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    eng = create_engine(empty_database)
    try:
        leftover = set(inspect(eng).get_table_names()) - {"alembic_version"}
        assert leftover == set()
        with eng.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_class WHERE relkind = 'S'")).scalar() == 0
        eng.dispose()
        command.upgrade(cfg, "head")
        assert {t.name for t in Base.metadata.sorted_tables} <= set(inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_models_and_migrations_do_not_drift(engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_updated_at_comes_from_database_clock_on_raw_updates(db) -> None:
    with db.begin() as conn:
        cid = conn.execute(
            text(
                "INSERT INTO companies (name, created_at, updated_at) VALUES ('A', now() - interval '1 day', "
                "now() - interval '1 day') RETURNING id"
            )
        ).scalar_one()
    with db.begin() as conn:
        conn.execute(text("UPDATE companies SET name = 'B' WHERE id = :id"), {"id": cid})
        age = conn.execute(text("SELECT now() - updated_at FROM companies WHERE id = :id"), {"id": cid}).scalar_one()
    assert age.total_seconds() < 60
