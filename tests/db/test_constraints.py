"""Every constraint that protects data, tried against the real schema."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from integration_core.local.seed import demo_company_id, demo_technician_id


def _job(conn: Connection, **over: object) -> uuid.UUID:
    values: dict[str, object] = {
        "summary": "Leaking water heater",
        "street": "1 Main St",
        "city": "LA",
        "state": "CA",
        "zip_code": "90210",
        "homeowner_name": "Pat",
        "homeowner_phone": "310-555-0000",
        "homeowner_email": None,
        "company": demo_company_id("handy-neighbors"),
        "tech": demo_technician_id("handy-neighbors"),
        "key": None,
    }
    values.update(over)
    job_id: uuid.UUID = conn.execute(
        text(
            "INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
            "homeowner_email, created_by_company_id, created_by_technician_id, idempotency_key) VALUES "
            "(:summary, :street, :city, :state, :zip_code, :homeowner_name, :homeowner_phone, :homeowner_email, "
            ":company, :tech, :key) RETURNING id"
        ),
        values,
    ).scalar_one()
    return job_id


def _routing(conn: Connection, job_id: uuid.UUID, company: str = "sunset-plumbing", **cols: object) -> uuid.UUID:
    names = ", ".join(["job_id", "receiving_company_id", *cols])
    params = ", ".join([":job_id", ":rc", *(f":{c}" for c in cols)])
    routing_id: uuid.UUID = conn.execute(
        text(f"INSERT INTO job_routings ({names}) VALUES ({params}) RETURNING id"),
        {"job_id": job_id, "rc": demo_company_id(company), **cols},
    ).scalar_one()
    return routing_id


def _violates(engine: Engine, constraint: str, sql_fn) -> None:
    with pytest.raises(IntegrityError) as info, engine.begin() as conn:
        sql_fn(conn)
    assert constraint in str(info.value.orig), str(info.value.orig)


def test_a_raw_routing_insert_gets_safe_defaults(demo, db: Engine) -> None:
    """The main app may write routings straight into Postgres: defaults make them due and well-formed."""
    with db.begin() as conn:
        rid = _routing(conn, _job(conn))
        row = (
            conn.execute(
                text(
                    "SELECT status, attempts, lease_version, next_attempt_at <= now() AS due, "
                    "sequence FROM job_routings WHERE id = :id"
                ),
                {"id": rid},
            )
            .mappings()
            .one()
        )
    assert row["status"] == "pending" and row["attempts"] == 0 and row["lease_version"] == 0 and row["due"]
    assert row["sequence"] >= 1


def test_sequence_is_monotonic(demo, db: Engine) -> None:
    with db.begin() as conn:
        job = _job(conn)
        seqs: list[int] = [
            conn.execute(
                text("SELECT sequence FROM job_routings WHERE id = :id"), {"id": _routing(conn, job, c)}
            ).scalar_one()
            for c in ("sunset-plumbing", "bright-spark", "cool-breeze")
        ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


@pytest.mark.parametrize(
    ("constraint", "action"),
    [
        (
            "uq_job_routings_job_id_receiving_company_id",
            lambda c: [_routing(c, j := _job(c)), _routing(c, j)],
        ),
        ("ck_job_routings_status_known", lambda c: _routing(c, _job(c), status="delivered")),
        ("ck_job_routings_synced_has_external_id", lambda c: _routing(c, _job(c), status="synced")),
        ("ck_job_routings_claimed_has_lease", lambda c: _routing(c, _job(c), status="claimed")),
        ("ck_job_routings_attempts_non_negative", lambda c: _routing(c, _job(c), attempts=-1)),
        ("ck_job_routings_revenue_non_negative", lambda c: _routing(c, _job(c), revenue=-5)),
        ("fk_job_routings_job_id_jobs", lambda c: _routing(c, uuid.uuid4())),
        ("uq_jobs_created_by_company_id_idempotency_key", lambda c: [_job(c, key="k"), _job(c, key="k")]),
        ("ck_jobs_homeowner_contact", lambda c: _job(c, homeowner_phone=None)),
        ("ck_jobs_summary_not_blank", lambda c: _job(c, summary="  ")),
        ("fk_jobs_created_by_technician_id_technicians", lambda c: _job(c, tech=uuid.uuid4())),
        (
            "ck_company_skills_level_known",
            lambda c: c.execute(
                text("INSERT INTO company_skills (company_id, skill, level) VALUES (:c, 'x', 'guru')"),
                {"c": demo_company_id("cool-breeze")},
            ),
        ),
        (
            "uq_company_skills_company_id_skill",
            lambda c: c.execute(
                text("INSERT INTO company_skills (company_id, skill, level) VALUES (:c, 'hvac', 'basic')"),
                {"c": demo_company_id("cool-breeze")},
            ),
        ),
        (
            "uq_provider_connections_company_id_provider",
            lambda c: c.execute(
                text(
                    "INSERT INTO provider_connections (company_id, account_id, settings) "
                    "VALUES (:c, '1', '{\"booking_provider_id\": 1}')"
                ),
                {"c": demo_company_id("cool-breeze")},
            ),
        ),
        (
            "ck_provider_connections_booking_needs_provider",
            lambda c: c.execute(
                text("INSERT INTO provider_connections (company_id, account_id) VALUES (:c, '1')"),
                {"c": demo_company_id("handy-neighbors")},
            ),
        ),
        (
            "ck_provider_connections_job_needs_ids",
            lambda c: c.execute(
                text(
                    "INSERT INTO provider_connections (company_id, account_id, delivery_mode, settings) "
                    "VALUES (:c, '1', 'job', '{\"business_unit_id\": 1, \"job_type_id\": 2}')"
                ),
                {"c": demo_company_id("handy-neighbors")},
            ),
        ),
    ],
)
def test_constraint_rejects_bad_rows(demo, db: Engine, constraint: str, action) -> None:
    _violates(db, constraint, action)


def test_a_rejected_write_loses_nothing_already_stored(demo, db: Engine) -> None:
    with db.begin() as conn:
        job = _job(conn, key="k1")
    with pytest.raises(IntegrityError), db.begin() as conn:
        _job(conn, key="k1")
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE id = :id"), {"id": job}).scalar() == 1
