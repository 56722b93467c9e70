"""Migration 0009 (drop `ix_job_routings_due_sequence`, which no query reads) up and down on a database holding due
routings: the index goes and comes back valid with its predicate, and the sensor's query answers the same on either
side."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from integration_core.delivery.monitoring import due_companies
from tests.support.db import alembic_config, raw_job, routing_indexes, scratch_database

NAME = "ix_job_routings_due_sequence"


@pytest.fixture()
def scratch_url(pg_server: str) -> Iterator[str]:
    with scratch_database(pg_server, "si_mig9") as url:
        yield url


def _due_world(engine: Engine) -> None:
    """A receiving company with an enabled connection and three due routings (one awaiting a lookup)."""
    with engine.begin() as c:
        company: uuid.UUID = c.execute(
            text("INSERT INTO companies (name) VALUES ('Receiver') RETURNING id")
        ).scalar_one()
        c.execute(
            text(
                "INSERT INTO provider_connections (company_id, account_id, settings) "
                "VALUES (:c, 'T-1', '{\"booking_provider_id\": 1}')"
            ),
            {"c": company},
        )
        tech: uuid.UUID = c.execute(
            text("INSERT INTO technicians (company_id, name) VALUES (:c, 'T') RETURNING id"), {"c": company}
        ).scalar_one()
        for n, status in enumerate(("pending", "pending", "needs_reconcile")):
            job = raw_job(c, company, tech, f"job {n}")
            c.execute(
                text(
                    "INSERT INTO job_routings (job_id, receiving_company_id, status, next_attempt_at) "
                    "VALUES (:j, :c, :s, now() - interval '1 minute')"
                ),
                {"j": job, "c": company, "s": status},
            )


def _sensor(engine: Engine) -> list[tuple[str, int]]:
    with Session(engine) as session:
        return [(d.name, d.due) for d in due_companies(session, limit=10)]


def test_0009_drops_the_index_and_downgrade_builds_it_again(scratch_url: str) -> None:
    config = alembic_config(scratch_url)
    command.upgrade(config, "0008")
    engine = create_engine(scratch_url)
    try:
        _due_world(engine)
        assert NAME in routing_indexes(engine)

        command.upgrade(config, "0009")
        assert NAME not in routing_indexes(engine)
        assert _sensor(engine) == [("Receiver", 3)]

        command.downgrade(config, "0008")
        definition, valid = routing_indexes(engine)[NAME]
        assert valid, definition  # built to the end, not left invalid
        assert "(receiving_company_id, sequence)" in definition
        assert "'pending'" in definition and "'needs_reconcile'" in definition
        assert _sensor(engine) == [("Receiver", 3)]

        command.upgrade(config, "head")
        assert NAME not in routing_indexes(engine)
    finally:
        engine.dispose()
