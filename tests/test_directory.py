"""Provider connections: secrets encrypted at rest, enable/disable moves waiting routings, rematch."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import select, text

from integration_core import crypto
from integration_core.db.models import Job, JobRouting, ProviderConnection
from integration_core.local.demo import DEMO_HCP_ACCOUNTS, DEMO_TENANTS
from integration_core.local.seed import demo_company_id, demo_technician_id, seed_demo
from integration_core.referrals import directory
from integration_core.referrals.intake import create_job, rematch
from integration_core.schemas import CompanyCreate, ConnectionCreate, JobCreate
from tests.support.config import TEST_SECRET_KEY


def test_secrets_are_unreadable_in_the_database(demo, db) -> None:
    plaintexts = {t.client_secret for t in DEMO_TENANTS} | {t.client_id for t in DEMO_TENANTS}
    plaintexts |= {t.app_key for t in DEMO_TENANTS} | {a.api_key for a in DEMO_HCP_ACCOUNTS}
    with db.connect() as conn:
        dump = conn.execute(text("SELECT row_to_json(p)::text FROM provider_connections p")).scalars().all()
        audit = conn.execute(text("SELECT details::text FROM audit_log")).scalars().all()
    assert len(dump) == 6  # five ServiceTitan tenants and ElectroFix on Housecall Pro
    for row in dump + audit:
        for secret in plaintexts:
            assert secret not in row


def test_credentials_round_trip_only_with_the_right_key(demo, session_factory) -> None:
    with session_factory() as session:
        conn = session.scalars(select(ProviderConnection).where(ProviderConnection.account_id == "1001")).one()
        assert directory.credentials(conn, TEST_SECRET_KEY)["client_secret"] == "cs1.demo-secret-1001"
        with pytest.raises(crypto.SecretDecryptionError) as info:
            directory.credentials(conn, "another-secret-key-entirely")
        assert "cs1" not in str(info.value)
        out = directory.connection_out(conn, TEST_SECRET_KEY).model_dump_json()
        assert "demo-secret" not in out and "ak1.demo" not in out and "cid.demo" not in out
        assert directory.connection_out(conn).secrets_set == {"client_id": True, "client_secret": True, "app_key": True}


def test_connection_input_never_echoes_secrets() -> None:
    data = ConnectionCreate.model_validate(
        {
            "environment": "sandbox",
            "base_url": "http://127.0.0.1:9",
            "tenant_id": "1",
            "client_id": "cid.a",
            "client_secret": "cs1.very-secret",
            "app_key": "ak1.key",
            "booking_provider_id": 1,
        }
    )
    assert "very-secret" not in repr(data) and "very-secret" not in data.model_dump_json()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"delivery_mode": "booking", "booking_provider_id": None}, "booking_provider_id"),
        ({"delivery_mode": "job"}, "business_unit_id"),
        ({"environment": "sandbox", "base_url": None}, "base_url"),
        ({"tenant_id": "abc"}, "tenant_id"),
        ({"client_secret": "  "}, "client_secret"),
    ],
)
def test_connection_validation(over: dict[str, object], message: str) -> None:
    body = {
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:9",
        "tenant_id": "1",
        "client_id": "cid.a",
        "client_secret": "cs1.s",
        "app_key": "ak1.k",
        "booking_provider_id": 1,
        **over,
    }
    with pytest.raises(ValidationError) as info:
        ConnectionCreate.model_validate(body)
    assert message in str(info.value)


def _refer(session, skills: list[str], referrer: str = "sunset-plumbing", zip_code: str = "90210"):
    data = JobCreate.model_validate(
        {
            "summary": "Need work",
            "address": {"street": "1 A St", "city": "LA", "state": "CA", "zip_code": zip_code},
            "homeowner": {"name": "Pat", "phone": "310-555-0100"},
            "created_by_company_id": str(demo_company_id(referrer)),
            "created_by_technician_id": str(demo_technician_id(referrer)),
            "required_skills": skills,
        }
    )
    return create_job(session, data, idempotency_key=None, top_n=1).job


def test_enabling_a_connection_releases_no_integration_routings(demo, session_factory) -> None:
    with session_factory() as session, session.begin():
        job = _refer(session, ["carpentry"])
        assert job.routings[0].status == "no_integration"
        handy = demo_company_id("handy-neighbors")
        conn = directory.upsert_connection(
            session,
            handy,
            ConnectionCreate.model_validate(
                {
                    "environment": "sandbox",
                    "base_url": "http://127.0.0.1:9",
                    "tenant_id": "1001",
                    "client_id": "cid.x",
                    "client_secret": "cs1.x",
                    "app_key": "ak1.x",
                    "booking_provider_id": 1,
                }
            ),
            secret_key=TEST_SECRET_KEY,
            actor="test",
        )
    with session_factory() as session, session.begin():
        assert session.get(JobRouting, job.routings[0].id).status == "pending"
        conn = session.get(ProviderConnection, conn.id)
        assert directory.set_connection_enabled(session, conn, False, actor="test") == 1
    with session_factory() as session:
        assert session.get(JobRouting, job.routings[0].id).status == "no_integration"
        actions = session.execute(text("SELECT action FROM audit_log ORDER BY id")).scalars().all()
        assert "connection.enabled" in actions and "connection.disabled" in actions


def test_rematch_routes_jobs_once_a_company_serves_the_area(demo, session_factory) -> None:
    with session_factory() as session, session.begin():
        job = _refer(session, ["plumbing"], zip_code="30301")
        assert job.status == "unmatched"
        assert rematch(session, top_n=1) == {"routed": 0, "unmatched": 1}
        directory.create_company(
            session,
            CompanyCreate.model_validate(
                {
                    "name": "Atlanta Plumbing",
                    "service_zip_codes": ["30301"],
                    "skills": [{"skill": "plumbing", "level": "expert"}],
                }
            ),
            actor="test",
        )
        assert rematch(session, top_n=1) == {"routed": 1, "unmatched": 0}
    with session_factory() as session:
        stored = session.get(Job, job.id)
        assert stored.status == "routed" and len(stored.routings) == 1


def test_seed_demo_is_idempotent(demo, session_factory, settings) -> None:
    with session_factory() as session, session.begin():
        again = seed_demo(session, secret_key=TEST_SECRET_KEY, sandbox_url=settings.servicetitan_sandbox_url)
    assert (again.companies_created, again.technicians_created, again.connections_created) == (0, 0, 0)


def test_the_guides_90210_example_reaches_the_housecall_pro_demo_company_only_by_skill(demo, session_factory) -> None:
    """ElectroFix (Housecall Pro) shares 90210 with the ServiceTitan demo companies: the guide's example without
    skills still goes to Bright Spark first (the guide's expectations hold); a skill only ElectroFix has routes
    to it, pending delivery through its Housecall Pro connection."""
    with session_factory() as session, session.begin():
        plain = _refer(session, [])
        lighting = _refer(session, ["lighting"])
        assert plain.routings[0].receiving_company_id == demo_company_id("bright-spark")
        [routing] = lighting.routings
        assert routing.receiving_company_id == demo_company_id("electrofix") and routing.status == "pending"
        conn = session.scalars(
            select(ProviderConnection).where(ProviderConnection.company_id == demo_company_id("electrofix"))
        ).one()
        assert conn.provider == "housecallpro" and conn.enabled and conn.delivery_mode == "lead"
        assert directory.credentials(conn, TEST_SECRET_KEY) == {"api_key": DEMO_HCP_ACCOUNTS[0].api_key}
