"""End to end: the sandbox's back office moves a delivered record → a signed webhook → the API → the inbox →
apply → the routing shows it; the status pull afterwards finds nothing new. Real sandbox process, real HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text

from integration_core.api.app import create_app
from integration_core.delivery.engine import deliver_batch
from integration_core.delivery.updates import pull_updates
from integration_core.local.http_server import serve_in_thread
from integration_core.settings import Settings
from tests.support.config import with_settings
from tests.support.delivery import run
from tests.support.sandbox import SandboxHandle
from tests.support.webhooks import (
    GENERIC_SECRET,
    ST_SECRET,
    apply,
    configure,
    connection_id,
    inbox,
    rejections,
    routing,
)
from tests.support.world import World, add_receiver, add_routings


@pytest.fixture()
def api_url(db: Engine, engine_settings: Settings) -> Iterator[str]:
    settings = with_settings(
        engine_settings, webhook_generic_secret=SecretStr(GENERIC_SECRET), webhook_apply_in_api=False
    )
    with serve_in_thread(create_app(settings, engine=db)) as url:
        yield url


@pytest.fixture()
def applying_api_url(db: Engine, engine_settings: Settings) -> Iterator[str]:
    """The API as `make run` serves it: it applies what it stored right after answering."""
    with serve_in_thread(create_app(with_settings(engine_settings, webhook_apply_in_api=True), engine=db)) as url:
        yield url


def _hooks(sandbox: SandboxHandle) -> dict[str, Any]:
    r = sandbox.control.get("/_sandbox/webhooks")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _settled(sandbox: SandboxHandle, tenant: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until every queued delivery of the tenant is done (delivered or given up); its counters."""
    deadline = time.monotonic() + timeout
    while True:
        hooks = _hooks(sandbox)
        stats = hooks["accounts"][tenant]["stats"]
        if hooks["pending"] == 0 and stats["emitted"] and stats["delivered"] + stats["gave_up"] >= stats["emitted"]:
            time.sleep(0.3)  # a duplicate's second copy may still be in flight
            return dict(_hooks(sandbox)["accounts"][tenant]["stats"])
        assert time.monotonic() < deadline, f"webhooks not delivered: {hooks}"
        time.sleep(0.05)


def _delivered_routings(
    db: Engine, database_url: str, settings: Settings, world: World, sandbox: SandboxHandle, n: int
) -> tuple[uuid.UUID, str, list[dict[str, Any]]]:
    company, tenant = add_receiver(db, sandbox)
    add_routings(db, world, company, n)
    summary = run(database_url, lambda e: deliver_batch(e, settings, company, "run-webhooks"))
    assert summary.outcomes.get("synced") == n, summary
    with db.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                text("SELECT id, external_id FROM job_routings WHERE receiving_company_id = :c ORDER BY sequence"),
                {"c": company},
            ).mappings()
        ]
    return company, tenant, rows


def test_office_moves_reach_the_routing_through_webhooks(
    db, database_url, engine_settings, world, sandbox, api_url
) -> None:
    company, tenant, (first, second) = _delivered_routings(db, database_url, engine_settings, world, sandbox, 2)
    conn = connection_id(db, company)
    configure(db, conn, ST_SECRET)
    target = {"url": f"{api_url}/webhooks/servicetitan?connection={conn}", "secret": ST_SECRET, "time_scale": 0.01}
    assert sandbox.control.put(f"/_sandbox/webhooks/{tenant}", json=target).status_code == 200
    # the provider misbehaves on demand: two events sent twice, the first one signed wrongly (then retried)
    chaos = sandbox.control.post(f"/_sandbox/webhooks/{tenant}/chaos", json={"duplicates": 2, "wrong_signatures": 1})
    assert chaos.status_code == 200, chaos.text

    base = f"/_sandbox/tenants/{tenant}"
    converted = sandbox.control.post(f"{base}/bookings/{first['external_id']}/advance", json={"status": "Converted"})
    job_id = converted.json()["job"]["id"]
    for status in ("Dispatched", "InProgress"):
        assert sandbox.control.post(f"{base}/jobs/{job_id}/advance", json={"status": status}).status_code == 200
    done = sandbox.control.post(f"{base}/jobs/{job_id}/advance", json={"status": "Completed", "invoice_total": 480.5})
    assert done.status_code == 200, done.text
    dismissed = sandbox.control.post(f"{base}/bookings/{second['external_id']}/advance", json={"status": "Dismissed"})
    assert dismissed.status_code == 200

    stats = _settled(sandbox, tenant)
    # Booking.Converted, Job.Updated x2, Job.Completed, Invoice.Created, Booking.Dismissed
    assert stats["emitted"] == 6 and stats["delivered"] == 8 and stats["gave_up"] == 0
    assert stats["wrong_signatures_sent"] == 1 and stats["duplicates_sent"] == 2
    assert rejections(db) == {"bad_signature": 1}
    assert len(inbox(db)) == 6  # duplicates stored once

    summary = apply(database_url, engine_settings)
    assert summary.applied == 6 and summary.unmatched == 0 and summary.errors == 0
    done_row, dismissed_row = routing(db, first["id"]), routing(db, second["id"])
    assert done_row["external_status"] == "completed" and done_row["revenue"] == Decimal("480.50")
    assert done_row["completed_at"] is not None and done_row["job_status"] == "completed"
    assert str(done_row["external_refs"]["job_id"]) == str(job_id)
    assert dismissed_row["external_status"] == "dismissed" and dismissed_row["job_status"] == "canceled"

    # the pull, the safety net, says the same thing: nothing to change, and it says so
    pulled = run(database_url, lambda e: pull_updates(e, engine_settings, company))
    assert pulled.error is None and pulled.routings_updated >= 2
    assert pulled.changes_not_from_webhooks == 0
    assert routing(db, first["id"]) == done_row and routing(db, second["id"]) == dismissed_row


def test_out_of_order_delivery_and_retries_give_up_after_the_schedule(
    db, database_url, engine_settings, world, sandbox, api_url
) -> None:
    company, tenant, (only,) = _delivered_routings(db, database_url, engine_settings, world, sandbox, 1)
    conn = connection_id(db, company)
    configure(db, conn, ST_SECRET)
    target = {"url": f"{api_url}/webhooks/servicetitan?connection={conn}", "secret": ST_SECRET, "time_scale": 0.01}
    sandbox.control.put(f"/_sandbox/webhooks/{tenant}", json=target)
    base = f"/_sandbox/tenants/{tenant}"
    job_id = sandbox.control.post(
        f"{base}/bookings/{only['external_id']}/advance", json={"status": "Converted"}
    ).json()["job"]["id"]
    _settled(sandbox, tenant)
    apply(database_url, engine_settings)
    # the next four events (Dispatched, InProgress, Completed, Invoice.Created) arrive newest first
    sandbox.control.post(f"/_sandbox/webhooks/{tenant}/chaos", json={"reorder": 4})
    for status in ("Dispatched", "InProgress"):
        sandbox.control.post(f"{base}/jobs/{job_id}/advance", json={"status": status})
    done = sandbox.control.post(f"{base}/jobs/{job_id}/advance", json={"status": "Completed", "invoice_total": 99})
    invoice_id = done.json()["invoice"]["id"]
    _settled(sandbox, tenant)
    received = [e["event_type"] for e in inbox(db)][1:]
    assert received == ["Invoice.Created", "Job.Completed", "Job.Updated", "Job.Updated"]
    summary = apply(database_url, engine_settings)
    assert summary.applied == 4
    row = routing(db, only["id"])
    assert row["external_status"] == "completed" and row["revenue"] == Decimal("99.00")

    # a receiver that never answers 2xx: tried on the schedule (1 + 4 retries), then given up
    dead = {**target, "url": "http://127.0.0.1:9/webhooks/servicetitan", "time_scale": 0.001}
    sandbox.control.put(f"/_sandbox/webhooks/{tenant}", json=dead)
    before = _hooks(sandbox)["accounts"][tenant]["stats"]
    assert sandbox.control.post(f"{base}/invoices/{invoice_id}/adjust", json={"total": 5}).status_code == 200
    deadline = time.monotonic() + 20
    while _hooks(sandbox)["accounts"][tenant]["stats"]["gave_up"] == before["gave_up"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    after = _hooks(sandbox)["accounts"][tenant]["stats"]
    assert after["attempts"] - before["attempts"] == 5 and after["delivered"] == before["delivered"]
    sandbox.control.delete(f"/_sandbox/webhooks/{tenant}")


def test_the_api_applies_right_after_acknowledging(
    db, database_url, engine_settings, world, sandbox, applying_api_url
) -> None:
    company, tenant, (only,) = _delivered_routings(db, database_url, engine_settings, world, sandbox, 1)
    conn = connection_id(db, company)
    configure(db, conn, ST_SECRET)
    url = f"{applying_api_url}/webhooks/servicetitan?connection={conn}"
    sandbox.control.put(f"/_sandbox/webhooks/{tenant}", json={"url": url, "secret": ST_SECRET})
    base = f"/_sandbox/tenants/{tenant}"
    converted = sandbox.control.post(f"{base}/bookings/{only['external_id']}/advance", json={"status": "Converted"})
    job_id = converted.json()["job"]["id"]
    for status in ("Dispatched", "InProgress"):
        sandbox.control.post(f"{base}/jobs/{job_id}/advance", json={"status": status})
    sandbox.control.post(f"{base}/jobs/{job_id}/advance", json={"status": "Completed", "invoice_total": 12.5})
    _settled(sandbox, tenant)
    deadline = time.monotonic() + 20  # no apply call here: the API's own applier does it
    while routing(db, only["id"])["revenue"] != Decimal("12.50"):
        assert time.monotonic() < deadline, routing(db, only["id"])
        time.sleep(0.05)
    assert routing(db, only["id"])["external_status"] == "completed"
    assert {e["status"] for e in inbox(db)} == {"applied"}
    sandbox.control.delete(f"/_sandbox/webhooks/{tenant}")


def test_make_run_wiring_configures_endpoints_and_sandboxes(
    db, database_url, engine_settings, world, sandbox, api_url
) -> None:
    from integration_core.webhooks.local import wire_local_sandboxes

    company, tenant, (only,) = _delivered_routings(db, database_url, engine_settings, world, sandbox, 1)
    wired = wire_local_sandboxes(engine_settings, engine=db, api_url=api_url)
    assert [(w.provider, w.account, w.ok) for w in wired] == [("servicetitan", tenant, True)]
    target = _hooks(sandbox)["accounts"][tenant]["target"]
    assert target["url"].endswith(f"/webhooks/servicetitan?connection={connection_id(db, company)}")
    assert target["header"] == "X-ServiceTitan-Signature" and target["secret_set"]
    again = wire_local_sandboxes(engine_settings, engine=db, api_url=api_url)  # idempotent: the same secret
    assert [w.ok for w in again] == [True]
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM webhook_endpoints")).scalar() == 1
    # the sandbox signs with the generated secret: accepted, applied
    base = f"/_sandbox/tenants/{tenant}"
    assert sandbox.control.post(
        f"{base}/bookings/{only['external_id']}/advance", json={"status": "Accepted"}
    ).is_success
    _settled(sandbox, tenant)
    assert rejections(db) == {} and len(inbox(db)) == 1
    apply(database_url, engine_settings)
    assert routing(db, only["id"])["external_status"] == "accepted"
    sandbox.control.delete(f"/_sandbox/webhooks/{tenant}")
