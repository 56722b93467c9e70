"""Housecall Pro end to end: the sandbox's job moves → its `on_event` hook → a signed webhook (Api-Signature,
hex, signed Api-Timestamp) → /webhooks/housecallpro → inbox → apply → routing; the pull then finds nothing new."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from integration_core.api.app import create_app
from integration_core.db.engine import session_scope
from integration_core.delivery.engine import deliver_batch
from integration_core.delivery.updates import pull_updates
from integration_core.local.http_server import serve_in_thread
from integration_core.referrals.directory import create_company, upsert_connection
from integration_core.schemas import CompanyCreate, ConnectionCreate
from integration_core.settings import Settings
from tests.support.config import TEST_SECRET_KEY, with_settings
from tests.support.delivery import run
from tests.support.housecallpro import HcpSandbox, serve_hcp_sandbox
from tests.support.housecallpro_client import hcp_connection_body
from tests.support.webhooks import HCP_SECRET, apply, configure, connection_id, inbox, rejections, routing
from tests.support.world import World, add_routings


@pytest.fixture(scope="module")
def hcp_url() -> Iterator[str]:
    with serve_hcp_sandbox() as url:
        yield url


@pytest.fixture()
def hcp(hcp_url: str) -> Iterator[HcpSandbox]:
    with httpx.Client(base_url=hcp_url, timeout=30) as control:
        yield HcpSandbox(hcp_url, control)


@pytest.fixture()
def api_url(db: Engine, engine_settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(with_settings(engine_settings, webhook_apply_in_api=False), engine=db)) as url:
        yield url


def _hooks(hcp: HcpSandbox) -> dict[str, Any]:
    return dict(hcp.control.get("/_sandbox/webhooks").json())


def test_job_completed_in_housecall_pro_reaches_the_routing(
    db: Engine, database_url: str, engine_settings: Settings, world: World, hcp: HcpSandbox, api_url: str
) -> None:
    account = hcp.create_account(name=f"HCP Webhooks {uuid.uuid4().hex[:6]}")
    with session_scope(db) as session:
        company = create_company(
            session,
            CompanyCreate(name=f"HCP Receiver {account.company_id[-6:]}", service_zip_codes=["90210"]),
            actor="test",
        )
        upsert_connection(
            session,
            company.id,
            ConnectionCreate.model_validate(hcp_connection_body(account, hcp.url, mode="job")),
            secret_key=TEST_SECRET_KEY,
            actor="test",
        )
        company_id = company.id
    [rid] = add_routings(db, world, company_id, 1)
    summary = run(database_url, lambda e: deliver_batch(e, engine_settings, company_id, "run-hcp-webhooks"))
    assert summary.outcomes.get("synced") == 1, summary
    with db.connect() as conn:
        job_id: str = conn.execute(text("SELECT external_id FROM job_routings WHERE id = :r"), {"r": rid}).scalar_one()

    conn_id = connection_id(db, company_id)
    configure(db, conn_id, HCP_SECRET)  # Housecall Pro's defaults: Api-Signature, hex, Api-Timestamp signed
    target = {"url": f"{api_url}/webhooks/housecallpro?connection={conn_id}", "secret": HCP_SECRET}
    put = hcp.control.put(f"/_sandbox/webhooks/{account.company_id}", json=target)
    assert put.status_code == 200 and put.json()["target"]["timestamp_header"] == "Api-Timestamp", put.text

    base = f"/_sandbox/accounts/{account.company_id}/jobs/{job_id}/advance"
    for body in ({"status": "scheduled"}, {"status": "in_progress"}, {"status": "completed", "invoice_total": 321.5}):
        r = hcp.control.post(base, json=body)
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while True:
        stats = _hooks(hcp)["accounts"][account.company_id]["stats"]
        if (
            stats["emitted"]
            and stats["delivered"] + stats["gave_up"] >= stats["emitted"]
            and not _hooks(hcp)["pending"]
        ):
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)
    assert stats["gave_up"] == 0 and rejections(db) == {}
    kinds = [e["event_type"] for e in inbox(db)]
    assert {"job.scheduled", "job.started", "job.completed"} <= set(kinds), kinds

    applied = apply(database_url, engine_settings)
    assert applied.errors == 0
    row = routing(db, rid)
    assert row["external_status"] == "completed" and row["revenue"] == Decimal("321.50"), row
    assert row["completed_at"] is not None and row["job_status"] == "completed"

    pulled = run(database_url, lambda e: pull_updates(e, engine_settings, company_id))
    assert pulled.error is None and pulled.changes_not_from_webhooks == 0, pulled
    assert routing(db, rid)["revenue"] == Decimal("321.50")
    hcp.control.delete(f"/_sandbox/webhooks/{account.company_id}")
