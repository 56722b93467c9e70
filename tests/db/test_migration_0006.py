"""Migration 0006 (input hardening) up and down on a database with data: company skills spelled several ways
become one normalised row (highest level, primary if any was); the check then refuses an unnormalised skill."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from tests.support.db import alembic_config, scratch_database


@pytest.fixture()
def scratch_url(pg_server: str) -> Iterator[str]:
    with scratch_database(pg_server, "si_mig6") as url:
        yield url


def test_0006_normalises_skills_and_goes_down_again(scratch_url: str) -> None:
    cfg = alembic_config(scratch_url)
    command.upgrade(cfg, "0005")
    engine = create_engine(scratch_url)
    try:
        with engine.begin() as c:
            a: uuid.UUID = c.execute(text("INSERT INTO companies (name) VALUES ('A') RETURNING id")).scalar_one()
            b: uuid.UUID = c.execute(text("INSERT INTO companies (name) VALUES ('B') RETURNING id")).scalar_one()
            for company, skill, level, primary in [
                (a, "Water Heater", "basic", False),
                (a, "water-heater", "expert", False),
                (a, "water_heater", "intermediate", True),
                (a, " Gutters", "basic", False),
                (b, "a b", "intermediate", False),
                (b, "a-b", "basic", True),
                (b, "plumbing", "expert", False),
            ]:
                c.execute(
                    text("INSERT INTO company_skills (company_id, skill, level, is_primary) VALUES (:c, :s, :l, :p)"),
                    {"c": company, "s": skill, "l": level, "p": primary},
                )

        command.upgrade(cfg, "0006")
        with engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT c.name, s.skill, s.level, s.is_primary FROM company_skills s "
                    "JOIN companies c ON c.id = s.company_id ORDER BY c.name, s.skill"
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            ("A", "gutters", "basic", False),
            ("A", "water_heater", "expert", True),
            ("B", "a_b", "intermediate", True),
            ("B", "plumbing", "expert", False),
        ]
        for bad in ("Water Heater", "a-b", "a b", "HVAC"):
            with pytest.raises(IntegrityError, match="ck_company_skills_skill_normalised"), engine.begin() as c:
                c.execute(text("INSERT INTO company_skills (company_id, skill) VALUES (:c, :s)"), {"c": a, "s": bad})

        command.downgrade(cfg, "0005")
        with engine.begin() as c:  # the check is gone
            c.execute(text("INSERT INTO company_skills (company_id, skill) VALUES (:c, 'HVAC')"), {"c": a})
            c.execute(text("DELETE FROM company_skills WHERE skill = 'HVAC'"))
        command.upgrade(cfg, "head")
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM company_skills")).scalar_one() == 4
    finally:
        engine.dispose()
