"""Migration 0003 (provider-neutral connections) up and down on a database holding ServiceTitan connections,
synced and waiting routings and a rate-limit row: nothing is lost either way, and after the upgrade a delivery
run delivers the waiting routings (real sandbox over HTTP) and leaves the synced one alone."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from integration_core import crypto
from integration_core.db.models import ProviderConnection
from integration_core.delivery.connections import connection_config
from integration_core.delivery.engine import deliver_batch
from integration_core.providers.servicetitan.config import ServiceTitanConnection
from integration_core.referrals import directory
from integration_core.schemas import ConnectionCreate
from tests.support.config import TEST_SECRET_KEY, engine_settings
from tests.support.db import alembic_config, scratch_database
from tests.support.sandbox import SandboxHandle

GUID = "5a4c3e1d-7d2b-4e0f-9a51-7e2f0c1d9b10"


@pytest.fixture()
def scratch_url(pg_server: str) -> Iterator[str]:
    with scratch_database(pg_server, "si_mig3") as url:
        yield url


_OLD_COLUMNS = (
    "tenant_id, client_id_encrypted, client_secret_encrypted, app_key_encrypted, delivery_mode, booking_provider_id, "
    "business_unit_id, job_type_id, campaign_id, priority, external_data_guid, base_url, environment, "
    "rate_limit_per_second, rate_limit_burst, enabled"
)


def _old_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as c:
        rows = c.execute(text(f"SELECT company_id, {_OLD_COLUMNS} FROM provider_connections")).mappings().all()
    return {str(r["company_id"]): {k: v for k, v in r.items() if k != "company_id"} for r in rows}


def _routings(engine: Engine) -> dict[str, tuple[str, str | None, int]]:
    with engine.connect() as c:
        rows = c.execute(text("SELECT id, status, external_id, attempts FROM job_routings")).all()
    return {str(r[0]): (r[1], r[2], r[3]) for r in rows}


def _insert_world(engine: Engine, sandbox: SandboxHandle) -> dict[str, Any]:
    """At revision 0002, with raw SQL: a referrer, two ServiceTitan receivers (booking on a sandbox tenant, job
    mode on a second one), routings synced / pending / needs_reconcile, and the limiter's row."""
    booking = sandbox.create_tenant(tenant_id=str(930000 + uuid.uuid4().int % 10_000), client_secret="cs1.mig-b-1")
    job = sandbox.create_tenant(
        tenant_id=str(940000 + uuid.uuid4().int % 10_000), client_secret="cs1.mig-j-2", external_data_guid=GUID
    )
    with engine.begin() as c:
        referrer: uuid.UUID = c.execute(
            text("INSERT INTO companies (name) VALUES ('Referrer') RETURNING id")
        ).scalar_one()
        tech: uuid.UUID = c.execute(
            text("INSERT INTO technicians (company_id, name) VALUES (:c, 'Tech') RETURNING id"), {"c": referrer}
        ).scalar_one()
        receivers: dict[str, dict[str, Any]] = {}
        for key, t, mode in (("booking", booking, "booking"), ("job", job, "job")):
            company: uuid.UUID = c.execute(
                text("INSERT INTO companies (name) VALUES (:n) RETURNING id"), {"n": f"Receiver {key}"}
            ).scalar_one()
            c.execute(
                text(
                    "INSERT INTO provider_connections (company_id, provider, environment, base_url, tenant_id, "
                    "client_id_encrypted, client_secret_encrypted, app_key_encrypted, delivery_mode, "
                    "booking_provider_id, business_unit_id, job_type_id, campaign_id, priority, external_data_guid, "
                    "rate_limit_per_second, rate_limit_burst) VALUES (:c, 'servicetitan', 'sandbox', :url, :tenant, "
                    ":cid, :cs, :ak, :mode, :bp, :bu, :jt, :cp, 'High', :guid, 250, 20)"
                ),
                {
                    "c": company,
                    "url": sandbox.url,
                    "tenant": t.tenant_id,
                    "cid": crypto.encrypt(t.client_id, TEST_SECRET_KEY),
                    "cs": crypto.encrypt(t.client_secret, TEST_SECRET_KEY),
                    "ak": crypto.encrypt(t.app_key, TEST_SECRET_KEY),
                    "mode": mode,
                    "bp": t.booking_provider_id,
                    "bu": t.business_unit_id if mode == "job" else None,
                    "jt": t.job_type_id if mode == "job" else None,
                    "cp": t.campaign_id if mode == "job" else None,
                    "guid": GUID if mode == "job" else None,
                },
            )
            routings: dict[str, uuid.UUID] = {}
            for status in ("synced", "pending", "needs_reconcile"):
                job_id: uuid.UUID = c.execute(
                    text(
                        "INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
                        "created_by_company_id, created_by_technician_id) VALUES ('Leaking pipe', '1 Main St', "
                        "'Beverly Hills', 'CA', '90210', 'Pat Doe', '310-555-0100', :r, :t) RETURNING id"
                    ),
                    {"r": referrer, "t": tech},
                ).scalar_one()
                routings[status] = c.execute(
                    text(
                        "INSERT INTO job_routings (job_id, receiving_company_id, status, external_id, attempts, "
                        "lookup_required, synced_at) VALUES (:j, :c, :s, :x, :a, :l, "
                        ":synced_at) RETURNING id"
                    ),
                    {
                        "j": job_id,
                        "c": company,
                        "s": status,
                        "x": "424242" if status == "synced" else None,
                        "a": 1 if status != "pending" else 0,
                        "l": status == "needs_reconcile",
                        "synced_at": datetime.now(UTC) if status == "synced" else None,
                    },
                ).scalar_one()
            receivers[key] = {"company": company, "tenant": t, "routings": routings}
        c.execute(
            text(
                "INSERT INTO provider_rate_limits (provider, tenant_id, rate, burst, current_rate, requests_total) "
                "VALUES ('servicetitan', :t, 30, 5, 30, 17)"
            ),
            {"t": booking.tenant_id},
        )
    return receivers


def test_0003_migrates_servicetitan_connections_up_and_down_and_deliveries_continue(
    scratch_url: str, sandbox: SandboxHandle
) -> None:
    cfg = alembic_config(scratch_url)
    command.upgrade(cfg, "0002")
    engine = create_engine(scratch_url)
    try:
        world = _insert_world(engine, sandbox)
        before, routings_before = _old_rows(engine), _routings(engine)

        command.upgrade(cfg, "head")
        with engine.connect() as c:
            rows = {
                str(r["company_id"]): r
                for r in c.execute(
                    text(
                        "SELECT company_id, provider, account_id, settings, secrets_encrypted, delivery_mode, "
                        "base_url, environment, rate_limit_per_second, rate_limit_burst, enabled "
                        "FROM provider_connections"
                    )
                ).mappings()
            }
            limiter = c.execute(text("SELECT provider, account_id, requests_total FROM provider_rate_limits")).one()
        assert _routings(engine) == routings_before
        assert tuple(limiter) == ("servicetitan", world["booking"]["tenant"].tenant_id, 17)  # the row keeps working
        for key, receiver in world.items():
            old, new = before[str(receiver["company"])], rows[str(receiver["company"])]
            t = receiver["tenant"]
            assert new["provider"] == "servicetitan" and new["account_id"] == t.tenant_id
            assert new["delivery_mode"] == key and new["base_url"] == sandbox.url and new["enabled"] is True
            expected = {"tenant_id": t.tenant_id, "priority": "High", "booking_provider_id": t.booking_provider_id}
            if key == "job":
                expected |= {
                    "business_unit_id": t.business_unit_id,
                    "job_type_id": t.job_type_id,
                    "campaign_id": t.campaign_id,
                    "external_data_guid": GUID,
                }
            assert new["settings"] == expected
            # the ciphertexts moved as they were: no key was needed, and the key still opens them
            assert new["secrets_encrypted"] == {
                "client_id": old["client_id_encrypted"],
                "client_secret": old["client_secret_encrypted"],
                "app_key": old["app_key_encrypted"],
            }
            with Session(engine) as session:
                row = session.query(ProviderConnection).filter_by(company_id=receiver["company"]).one()
                config = connection_config(row, TEST_SECRET_KEY)
            assert isinstance(config, ServiceTitanConnection)
            assert config.client_secret.get_secret_value() == t.client_secret and config.tenant_id == t.tenant_id
            assert config.missing_settings() == {}

        # deliveries continue: the waiting routings are delivered (the needs_reconcile one looked up first), the
        # synced one is not sent again
        settings = engine_settings(scratch_url)

        async def deliver(company: uuid.UUID) -> None:
            async_engine = create_async_engine(scratch_url)
            try:
                await deliver_batch(async_engine, settings, company, f"mig-{company}")
            finally:
                await async_engine.dispose()

        for receiver in world.values():
            asyncio.run(deliver(receiver["company"]))
        after = _routings(engine)
        for key, receiver in world.items():
            r = receiver["routings"]
            assert after[str(r["synced"])] == routings_before[str(r["synced"])]
            assert after[str(r["pending"])][0] == "synced" and after[str(r["needs_reconcile"])][0] == "synced"
            records = sandbox.inspect(receiver["tenant"].tenant_id)["records"]
            assert records["bookings" if key == "booking" else "jobs"] == 2  # one per waiting routing, no more

        routings_up = _routings(engine)
        command.downgrade(cfg, "0002")
        assert _old_rows(engine) == before  # every column as it was, ciphertexts included
        assert _routings(engine) == routings_up
        with engine.connect() as c:
            assert c.execute(text("SELECT tenant_id FROM provider_rate_limits")).scalar() == limiter[1]
    finally:
        engine.dispose()


def test_0003_downgrade_refuses_while_other_providers_are_connected(scratch_url: str) -> None:
    cfg = alembic_config(scratch_url)
    command.upgrade(cfg, "head")
    engine = create_engine(scratch_url)
    try:
        with Session(engine) as session, session.begin():
            company: uuid.UUID = session.execute(
                text("INSERT INTO companies (name) VALUES ('ElectroFix') RETURNING id")
            ).scalar_one()
            body = {
                "provider": "housecallpro",
                "base_url": "http://127.0.0.1:8101",
                "company_id": "cmp_x",
                "api_key": "hcp-key-1",
            }
            directory.upsert_connection(
                session, company, ConnectionCreate.model_validate(body), secret_key=TEST_SECRET_KEY, actor="test"
            )
        with pytest.raises(RuntimeError, match="other than ServiceTitan"):
            command.downgrade(cfg, "0002")
        with engine.connect() as c:  # nothing was dropped
            stored = c.execute(text("SELECT provider, settings FROM provider_connections")).one()
        assert stored[0] == "housecallpro" and json.dumps(stored[1])
    finally:
        engine.dispose()
