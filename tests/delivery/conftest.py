"""Harness for the delivery engine: a real sandbox over loopback, real PostgreSQL, fresh tenants per test."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from integration_core.db.engine import session_scope
from integration_core.local.http_server import free_port
from integration_core.referrals.directory import create_company, upsert_connection
from integration_core.schemas import CompanyCreate, ConnectionCreate
from integration_core.settings import Settings
from tests.conftest import TEST_API_TOKEN, TEST_SECRET_KEY

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
_tenant_ids = itertools.count(7001)


@dataclass
class SandboxHandle:
    url: str
    control: httpx.Client

    def tenant(self, tenant_id: str, **body: Any) -> dict[str, Any]:
        r = self.control.post("/_sandbox/tenants", json={"tenant_id": tenant_id, **body})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def faults(self, tenant_id: str, **faults: Any) -> None:
        r = self.control.put(f"/_sandbox/tenants/{tenant_id}/faults", json=faults)
        assert r.status_code == 200, r.text

    def inspect(self, tenant_id: str, **params: Any) -> dict[str, Any]:
        r = self.control.get(f"/_sandbox/tenants/{tenant_id}/inspect", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """One sandbox server in its own process for the session, as a real provider would be: what it measures
    (request times, 1-second windows) is not distorted by the test process. Tests use fresh tenants."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "integration_core.cli", "sandbox", "serve", "--port", str(port), "--no-demo-tenants"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "sandbox exited"
            try:
                # the OpenAPI definitions load in the background; requests would wait for them
                if httpx.get(url + "/_sandbox/health", timeout=1).json()["definitions_loaded"]:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "sandbox did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def sandbox(sandbox_url: str) -> Iterator[SandboxHandle]:
    with httpx.Client(base_url=sandbox_url, timeout=30) as control:
        yield SandboxHandle(sandbox_url, control)


@pytest.fixture()
def engine_settings(database_url: str) -> Settings:
    """Short timers so faults resolve within a test; everything else as in production."""
    return Settings(
        DATABASE_URL=database_url,
        API_TOKEN=TEST_API_TOKEN,
        SECRET_KEY=TEST_SECRET_KEY,
        ENVIRONMENT="test",
        DELIVERY_BACKOFF_BASE_SECONDS=0.05,
        DELIVERY_BACKOFF_CAP_SECONDS=0.3,
        DELIVERY_REQUEST_TIMEOUT_SECONDS=1.0,
        DELIVERY_LEASE_SECONDS=5,
        RECONCILE_DELAY_SECONDS=0,
        DELIVERY_MAX_ATTEMPTS=8,
    )


def run(database_url: str, fn: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run an async test body with an async engine bound to its own event loop."""

    async def main() -> T:
        engine = create_async_engine(database_url, pool_size=40, max_overflow=20)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@dataclass
class World:
    referrer: uuid.UUID
    technician: uuid.UUID


@pytest.fixture()
def world(db: Engine) -> World:
    with session_scope(db) as session:
        company = create_company(session, CompanyCreate(name="Referrer Co", service_zip_codes=["90210"]), actor="test")
        tech = session.execute(
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
    t = sandbox.tenant(
        tenant_id,
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
                    "client_id": t["client_id"],
                    "client_secret": client_secret or t["client_secret"],
                    "app_key": "ak1.test",
                    "delivery_mode": mode,
                    "booking_provider_id": t["booking_provider_ids"][0],
                    "business_unit_id": t["business_unit_ids"][0],
                    "job_type_id": t["job_type_ids"][0],
                    "campaign_id": t["campaign_ids"][0],
                    "external_data_guid": t["external_data_guid"],
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
        job_ids = (
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
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, count(*) FROM job_routings "
                "WHERE (CAST(:c AS uuid) IS NULL OR receiving_company_id = :c) GROUP BY status"
            ),
            {"c": company_id},
        ).all()
    return {s: n for s, n in rows}


def sandbox_marker_counts(sandbox: SandboxHandle, tenant_id: str, mode: str) -> dict[str, int]:
    """Records per routing marker at the sandbox (booking externalId, or the job's externalData marker)."""
    markers = sandbox.inspect(tenant_id)["markers"]
    if mode == "booking":
        return dict(markers["bookings"])
    return {k.split("=", 1)[1]: v for k, v in markers["jobs"].items()}
