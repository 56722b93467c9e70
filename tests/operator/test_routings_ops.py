"""Retrying dead letters and dry-running routings over HTTP. A dry run sends nothing: the sandbox sees zero
requests, and the rendered bodies are exactly what the provider's mapping (and the engine) would send."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine, text

from integration_core.delivery.engine import deliver_batch
from integration_core.providers.servicetitan import mapping
from integration_core.settings import Settings
from tests.support.delivery import run
from tests.support.operator import SECRETS, audit_rows, receiver, routing_status, set_status
from tests.support.sandbox import SandboxHandle
from tests.support.world import World, add_receiver, add_routings

# --- retry --------------------------------------------------------------------------------------------------


def test_retry_one_failed_routing(db: Engine, world: World, ops: httpx.Client) -> None:
    company = receiver(db, "Alpha Plumbing", tenant_id="501")
    failed, synced = add_routings(db, world, company, 2)
    set_status(db, [failed], "failed", error_code="validation_error")
    set_status(db, [synced], "synced")

    r = ops.post(f"/api/routings/{failed}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0
    assert routing_status(db, failed) == "pending"
    [row] = [a for a in audit_rows(db) if a["action"] == "routings.retried"]
    assert row["actor"] == "api" and row["details"]["routing_ids"] == [str(failed)]

    conflict = ops.post(f"/api/routings/{synced}/retry")
    assert conflict.status_code == 409 and "only failed routings" in conflict.json()["detail"]
    assert ops.post(f"/api/routings/{failed}/retry").status_code == 409  # pending now
    assert ops.post(f"/api/routings/{uuid.uuid4()}/retry").status_code == 404
    assert routing_status(db, synced) == "synced"


def test_bulk_retry_by_company_and_error_code(db: Engine, world: World, ops: httpx.Client) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    b = receiver(db, "Beta Electric", tenant_id="502")
    ra = add_routings(db, world, a, 4)
    rb = add_routings(db, world, b, 2)
    set_status(db, ra[:2], "failed", error_code="validation_error")
    set_status(db, ra[2:3], "failed", error_code="misconfigured")
    set_status(db, rb, "failed", error_code="validation_error")

    r = ops.post("/api/routings/retry", json={"company_id": str(a), "error_code": "validation_error"})
    assert r.status_code == 200, r.text
    assert r.json()["retried"] == 2 and sorted(r.json()["routing_ids"]) == sorted(map(str, ra[:2]))
    assert routing_status(db, ra[2]) == "failed" and routing_status(db, rb[0]) == "failed"

    r = ops.post("/api/routings/retry", json={"error_code": "validation_error", "reason": "fixed the mapping"})
    assert r.json()["retried"] == 2
    assert audit_rows(db)[-1]["details"]["reason"] == "fixed the mapping"

    r = ops.post("/api/routings/retry", json={"routing_ids": [str(ra[2]), str(ra[3])]})
    assert r.json() == {"retried": 1, "routing_ids": [str(ra[2])]}  # ra[3] is pending, not failed
    assert ops.post("/api/routings/retry", json={"company_id": str(uuid.uuid4())}).json()["retried"] == 0


def test_bulk_retry_field_errors(ops: httpx.Client) -> None:
    bodies: list[Any] = [{}, {"reason": "x"}, {"routing_ids": []}, {"company_id": "nope"}, {"routing_ids": ["x"]}, []]
    for body in bodies:
        r = ops.post("/api/routings/retry", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"][0] == "body"


# --- dry run ------------------------------------------------------------------------------------------------


def _no_secret(text_: str, *extra: str) -> None:
    for s in (*SECRETS, *extra):
        assert s not in text_


def test_dry_run_booking_renders_the_exact_body_and_sends_nothing(
    db: Engine, world: World, sandbox: SandboxHandle, ops: httpx.Client
) -> None:
    company, tenant = add_receiver(db, sandbox)
    [routing] = add_routings(db, world, company, 1)
    before = sandbox.inspect(tenant)["requests_total"]

    r = ops.post(f"/api/routings/{routing}/dry-run")
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["status"] == "pending" and plan["would_send"] is True and plan["lookup_required"] is False
    assert plan["due_now"] is True and plan["sent"] == 0 and "sends it" in plan["decision"]
    [create] = plan["requests"]
    assert create["operation"] == "create_booking" and create["method"] == "POST"
    assert create["url"].startswith(f"{sandbox.url}/crm/v2/tenant/{tenant}/booking-provider/")
    assert create["url"].endswith("/bookings")
    assert create["headers"]["Authorization"] == "Bearer [redacted]" and create["headers"]["ST-App-Key"] == "[redacted]"
    body = create["body"]
    assert body["externalId"] == str(routing) and body["source"] == mapping.BOOKING_SOURCE
    assert body["name"].startswith("Homeowner") and body["address"]["zip"] == "90210"

    # nothing was sent, nothing changed
    assert sandbox.inspect(tenant)["requests_total"] == before
    assert routing_status(db, routing) == "pending"
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sync_attempts")).scalar() == 0
    _no_secret(r.text, f"cs1.secret-{tenant}", "ak1.test", f"cid.t{tenant}")


def _stored_booking(sandbox: SandboxHandle, tenant: str, url: str, marker: str) -> dict[str, Any]:
    """The booking as ServiceTitan (the sandbox) stored it, read through the tenant API."""
    token = httpx.post(
        f"{sandbox.url}/connect/token",
        data={
            "grant_type": "client_credentials",
            "client_id": f"cid.t{tenant}",
            "client_secret": f"cs1.secret-{tenant}",
        },
    ).json()["access_token"]
    r = httpx.get(
        url,
        params={"externalId": marker},
        headers={"Authorization": f"Bearer {token}", "ST-App-Key": "ak1.test"},
    )
    [booking] = r.json()["data"]
    return dict(booking)


def test_dry_run_body_is_what_the_engine_then_sends(
    db: Engine, world: World, sandbox: SandboxHandle, engine_settings: Settings, ops: httpx.Client, database_url: str
) -> None:
    company, tenant = add_receiver(db, sandbox)
    [routing] = add_routings(db, world, company, 1)
    [planned] = ops.post(f"/api/routings/{routing}/dry-run").json()["requests"]

    run(database_url, lambda engine: deliver_batch(engine, engine_settings, company, "run-dry-run-check"))
    assert routing_status(db, routing) == "synced"
    stored = _stored_booking(sandbox, tenant, planned["url"], str(routing))
    body = planned["body"]
    # every field ServiceTitan answers with holds what the dry run showed (contacts are not listed back)
    common = sorted(set(stored) & set(body))
    assert {"externalId", "source", "name", "summary", "address"} <= set(common)
    for field in common:
        if isinstance(body[field], dict):
            assert {k: stored[field][k] for k in body[field]} == body[field], field
        else:
            assert stored[field] == body[field], field

    # and now the dry run says it would not send again
    after = ops.post(f"/api/routings/{routing}/dry-run").json()
    assert after["status"] == "synced" and after["would_send"] is False and "already delivered" in after["decision"]


def test_dry_run_after_an_unknown_outcome_looks_up_first(db: Engine, world: World, ops: httpx.Client) -> None:
    company = receiver(db, "Alpha Plumbing", tenant_id="501")
    [routing] = add_routings(db, world, company, 1)
    set_status(db, [routing], "needs_reconcile")
    plan = ops.post(f"/api/routings/{routing}/dry-run").json()
    assert plan["lookup_required"] is True and plan["would_send"] is True
    assert [r["operation"] for r in plan["requests"]] == ["find_existing", "create_booking"]
    assert plan["requests"][0]["params"]["externalId"] == str(routing)
    assert "looks the marker up first" in plan["decision"]
    assert plan["requests"][1]["when"] == "only if the lookup found nothing"


def test_dry_run_job_mode_renders_customer_location_and_job(db: Engine, world: World, ops: httpx.Client) -> None:
    company = receiver(db, "Alpha Plumbing", tenant_id="501", mode="job")
    [routing] = add_routings(db, world, company, 1)
    plan = ops.post(f"/api/routings/{routing}/dry-run").json()
    ops_ = [r["operation"] for r in plan["requests"]]
    assert ops_ == ["find_customer", "create_customer", "create_location", "create_job"]
    job = plan["requests"][-1]["body"]
    assert job["customerId"] == "{customerId}" and job["locationId"] == "{locationId}"
    assert job["businessUnitId"] == 11 and job["jobTypeId"] == 21 and job["campaignId"] == 31
    assert job["externalData"]["externalData"] == [{"key": mapping.MARKER_KEY, "value": str(routing)}]
    start = datetime.fromisoformat(job["appointments"][0]["start"].replace("Z", "+00:00"))
    assert start > datetime.now(UTC)
    assert set(plan["placeholders"]) == {"{customerId}", "{locationId}"}
    _no_secret(str(plan))


def test_dry_run_decisions_for_other_states(db: Engine, world: World, ops: httpx.Client) -> None:
    connected = receiver(db, "Alpha Plumbing", tenant_id="501")
    unconnected = receiver(db, "Beta Electric")
    failed, claimed = add_routings(db, world, connected, 2)
    [waiting] = add_routings(db, world, unconnected, 1)
    set_status(db, [failed], "failed", error_code="validation_error")
    set_status(db, [claimed], "claimed")
    set_status(db, [waiting], "no_integration")

    f = ops.post(f"/api/routings/{failed}/dry-run").json()
    assert f["would_send"] is False and "retried" in f["decision"] and f["requests"]  # what would go after retry
    c = ops.post(f"/api/routings/{claimed}/dry-run").json()
    assert c["would_send"] is False and "holds it" in c["decision"]
    w = ops.post(f"/api/routings/{waiting}/dry-run").json()
    assert w["would_send"] is False and w["connection"] is None and w["requests"] == []

    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE job_routings SET attempts = 8, status = 'needs_reconcile', lookup_required = true "
                "WHERE id = :id"
            ),
            {"id": failed},
        )
    e = ops.post(f"/api/routings/{failed}/dry-run").json()
    assert e["would_send"] is False and "attempts_exhausted" in e["decision"]


def test_dry_run_unknown_and_malformed(ops: httpx.Client) -> None:
    assert ops.post(f"/api/routings/{uuid.uuid4()}/dry-run").status_code == 404
    assert ops.post("/api/routings/nope/dry-run").status_code == 422
