"""`si seed demo`: the demo companies, technicians, skills and sandbox connections. Idempotent.

Ids are derived from the demo keys (uuid5), so they are the same on every machine and the README's example
`curl` works as written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from integration_core.db.models import Company, CompanySkill, ProviderConnection, Technician
from integration_core.domain import ProviderName
from integration_core.local.demo import DEMO_COMPANIES, DemoCompany
from integration_core.providers import registry
from integration_core.referrals import directory
from integration_core.schemas import ConnectionCreate
from integration_core.settings import Settings

DEFAULT_HCP_SANDBOX_URL: str = Settings.model_fields["housecallpro_sandbox_url"].default
DEMO_NAMESPACE = uuid.UUID("8f6c1f64-3f7e-4d1a-9a43-1b1c5d0e2a77")


def demo_company_id(key: str) -> uuid.UUID:
    return uuid.uuid5(DEMO_NAMESPACE, f"company:{key}")


def demo_technician_id(key: str, index: int = 0) -> uuid.UUID:
    return uuid.uuid5(DEMO_NAMESPACE, f"technician:{key}:{index}")


@dataclass(frozen=True)
class SeedSummary:
    companies_created: int
    technicians_created: int
    connections_created: int


def _ensure_company(session: Session, demo: DemoCompany) -> tuple[Company, bool]:
    cid = demo_company_id(demo.key)
    company = session.get(Company, cid)
    if company is not None:
        return company, False
    company = Company(
        id=cid,
        name=demo.name,
        trade=demo.trade,
        service_zip_codes=list(demo.zip_codes),
        timezone=demo.timezone,
        skills=[CompanySkill(skill=s, level=lvl, is_primary=p) for s, lvl, p in demo.skills],
    )
    session.add(company)
    session.flush()
    return company, True


def _connection_body(demo: DemoCompany, sandbox_url: str, housecallpro_sandbox_url: str) -> dict[str, Any] | None:
    if demo.hcp_account is not None:
        if registry.get(ProviderName.housecallpro).factory is None:
            return None  # the Housecall Pro provider is not in this build: the company stays unconnected
        a = demo.hcp_account
        return {
            "provider": ProviderName.housecallpro.value,
            "environment": "sandbox",
            "base_url": housecallpro_sandbox_url,
            "company_id": a.company_id,
            "api_key": a.api_key,
            "delivery_mode": demo.delivery_mode,
        }
    if demo.tenant is None:
        return None
    t = demo.tenant
    return {
        "provider": ProviderName.servicetitan.value,
        "environment": "sandbox",
        "base_url": sandbox_url,
        "tenant_id": t.tenant_id,
        "client_id": t.client_id,
        "client_secret": t.client_secret,
        "app_key": t.app_key,
        "delivery_mode": demo.delivery_mode,
        "booking_provider_id": t.booking_provider_id,
        "business_unit_id": t.business_unit_id,
        "job_type_id": t.job_type_id,
        "campaign_id": t.campaign_id,
        "external_data_guid": t.external_data_guid,
        "rate_limit_per_second": 60,
        "rate_limit_burst": 10,
    }


def seed_demo(
    session: Session, *, secret_key: str, sandbox_url: str, housecallpro_sandbox_url: str = DEFAULT_HCP_SANDBOX_URL
) -> SeedSummary:
    """`sandbox_url`: the ServiceTitan sandbox; `housecallpro_sandbox_url`: the Housecall Pro sandbox
    (HOUSECALLPRO_SANDBOX_URL)."""
    companies = techs = conns = 0
    for demo in DEMO_COMPANIES:
        company, created = _ensure_company(session, demo)
        companies += created
        for i, (name, phone, email) in enumerate(demo.technicians):
            tid = demo_technician_id(demo.key, i)
            if session.get(Technician, tid) is None:
                session.add(Technician(id=tid, company_id=company.id, name=name, phone=phone, email=email))
                techs += 1
        body = _connection_body(demo, sandbox_url, housecallpro_sandbox_url)
        if body is None:
            continue
        exists = session.scalar(select(ProviderConnection.id).where(ProviderConnection.company_id == company.id))
        if exists is not None:
            continue
        directory.upsert_connection(
            session, company.id, ConnectionCreate.model_validate(body), secret_key=secret_key, actor="seed"
        )
        conns += 1
    session.flush()
    return SeedSummary(companies, techs, conns)
