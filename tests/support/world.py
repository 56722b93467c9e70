"""The world a delivery test runs in: a referring company with a technician, receiving companies connected to
fresh sandbox tenants, and routed referrals written as the main app writes them (plain SQL)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, text

from integration_core.db.engine import session_scope
from integration_core.referrals.directory import create_company, upsert_connection
from integration_core.schemas import CompanyCreate, ConnectionCreate
from tests.support.config import TEST_SECRET_KEY
from tests.support.sandbox import SandboxHandle

_tenant_ids = itertools.count(7001)


@dataclass
class World:
    """The referring side: a company and its technician, who create the jobs."""

    referrer: uuid.UUID
    technician: uuid.UUID


def make_world(db: Engine) -> World:
    with session_scope(db) as session:
        company = create_company(session, CompanyCreate(name="Referrer Co", service_zip_codes=["90210"]), actor="test")
        tech: uuid.UUID = session.execute(
            text("INSERT INTO technicians (company_id, name) VALUES (:c, 'Tech') RETURNING id"), {"c": company.id}
        ).scalar_one()
        return World(company.id, tech)


def add_receiver(
    db: Engine,
    sandbox: SandboxHandle,
    *,
    mode: str = "booking",
    rate: float = 60.0,
    sandbox_rate: float | None = None,
    client_secret: str | None = None,
    tenant_id: str | None = None,
    burst: int = 10,
) -> tuple[uuid.UUID, str]:
    """A receiving company connected to a fresh sandbox tenant; returns (company id, tenant id)."""
    tenant_id = tenant_id or str(next(_tenant_ids))
    t = sandbox.create_tenant(
        tenant_id=tenant_id,
        client_id=f"cid.t{tenant_id}",
        client_secret=f"cs1.secret-{tenant_id}",
        app_key="ak1.test",
        external_data_guid="5a4c3e1d-7d2b-4e0f-9a51-7e2f0c1d9b10",
        rate=sandbox_rate or rate,
        burst=max(1, int(sandbox_rate or rate)),
    )
    with session_scope(db) as session:
        company = create_company(
            session, CompanyCreate(name=f"Receiver {tenant_id}", service_zip_codes=["90210"]), actor="test"
        )
        upsert_connection(
            session,
            company.id,
            ConnectionCreate.model_validate(
                {
                    "environment": "sandbox",
                    "base_url": sandbox.url,
                    "tenant_id": tenant_id,
                    "client_id": t.client_id,
                    "client_secret": client_secret or t.client_secret,
                    "app_key": "ak1.test",
                    "delivery_mode": mode,
                    "booking_provider_id": t.booking_provider_id,
                    "business_unit_id": t.business_unit_id,
                    "job_type_id": t.job_type_id,
                    "campaign_id": t.campaign_id,
                    "external_data_guid": t.external_data_guid,
                    "rate_limit_per_second": rate,
                    "rate_limit_burst": burst,
                }
            ),
            secret_key=TEST_SECRET_KEY,
            actor="test",
        )
        return company.id, tenant_id


def add_routings(db: Engine, world: World, company_id: uuid.UUID, n: int) -> list[uuid.UUID]:
    """`n` referrals routed to `company_id`, as the main app would write them (plain SQL)."""
    with db.begin() as conn:
        job_ids: Sequence[uuid.UUID] = (
            conn.execute(
                text(
                    """
                INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone,
                                  homeowner_email, created_by_company_id, created_by_technician_id)
                SELECT 'Water heater leaking #' || g, g || ' Elm St', 'Beverly Hills', 'CA', '90210',
                       'Homeowner ' || g, '310555' || lpad(g::text, 4, '0'), 'owner' || g || '@example.com', :c, :t
                  FROM generate_series(1, :n) g
                RETURNING id
                """
                ),
                {"c": world.referrer, "t": world.technician, "n": n},
            )
            .scalars()
            .all()
        )
        return list(
            conn.execute(
                text(
                    "INSERT INTO job_routings (job_id, receiving_company_id) "
                    "SELECT unnest(CAST(:jobs AS uuid[])), :rc RETURNING id"
                ),
                {"jobs": list(job_ids), "rc": company_id},
            )
            .scalars()
            .all()
        )


def statuses(db: Engine, company_id: uuid.UUID | None = None) -> dict[str, int]:
    """Routings per status (of one receiving company, or all)."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, count(*)::int FROM job_routings "
                "WHERE (CAST(:c AS uuid) IS NULL OR receiving_company_id = :c) GROUP BY status"
            ),
            {"c": company_id},
        ).tuples()
        return {str(s): n for s, n in rows}
