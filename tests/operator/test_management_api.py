"""Managing companies, skills, technicians and provider connections over HTTP: usable without SQL, secrets
write-only (never in a response or an audit row), 404 for unknown ids, field-level 422s."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.support.operator import SECRETS, audit_rows, connection_json
from tests.support.sandbox import SandboxHandle
from tests.support.world import World, add_routings

COMPANY = {
    "name": "Gamma Roofing",
    "trade": "roofing",
    "service_zip_codes": ["78701", "78704", "78701"],
    "timezone": "America/Chicago",
    "skills": [{"skill": "roofing", "level": "expert", "primary": True}, {"skill": "gutters"}],
}


def _create(client: httpx.Client, **overrides: object) -> dict[str, Any]:
    r = client.post("/api/admin/companies", json={**COMPANY, **overrides})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _locs(r: httpx.Response) -> list[list[object]]:
    assert r.status_code == 422, r.text
    return [e["loc"] for e in r.json()["detail"]]


def test_company_lifecycle(ops: httpx.Client, db: Engine) -> None:
    company = _create(ops)
    cid = company["id"]
    assert company["service_zip_codes"] == ["78701", "78704"]
    assert [s["skill"] for s in company["skills"]] == ["gutters", "roofing"]
    assert company["provider"] == {
        "configured": False,
        "enabled": False,
        **dict.fromkeys(["provider", "environment", "account_id", "delivery_mode", "health"]),
    }
    assert ops.get(f"/api/admin/companies/{cid}").json()["name"] == "Gamma Roofing"

    patched = ops.patch(
        f"/api/admin/companies/{cid}", json={"name": "Gamma Roofing & Gutters", "service_zip_codes": ["78702"]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Gamma Roofing & Gutters" and patched.json()["service_zip_codes"] == ["78702"]
    assert patched.json()["trade"] == "roofing"  # untouched

    skills = ops.put(f"/api/admin/companies/{cid}/skills", json={"skills": [{"skill": "gutters", "level": "basic"}]})
    assert skills.status_code == 200 and skills.json()["skills"] == [
        {"skill": "gutters", "level": "basic", "primary": False}
    ]
    # replacing with the same names again works (delete before insert)
    assert ops.put(f"/api/admin/companies/{cid}/skills", json={"skills": [{"skill": "gutters"}]}).status_code == 200

    disabled = ops.post(f"/api/admin/companies/{cid}/disable")
    assert disabled.status_code == 200 and disabled.json()["active"] is False
    assert [c["id"] for c in ops.get("/api/admin/companies", params={"active": "false"}).json()["items"]] == [cid]
    assert ops.post(f"/api/admin/companies/{cid}/enable").json()["active"] is True

    actions = [a["action"] for a in audit_rows(db)]
    assert actions == [
        "company.created",
        "company.updated",
        "company.skills_replaced",
        "company.skills_replaced",
        "company.disabled",
        "company.enabled",
    ]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": ""}, ["body", "name"]),
        ({"service_zip_codes": ["9021"]}, ["body", "service_zip_codes", 0]),
        ({"timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({"active": "maybe"}, ["body", "active"]),
        ({"color": "red"}, ["body", "color"]),
        ({"name": None}, ["body", "name"]),
    ],
)
def test_company_update_field_errors(ops: httpx.Client, body: dict[str, Any], loc: list[object]) -> None:
    cid = _create(ops)["id"]
    assert loc in _locs(ops.patch(f"/api/admin/companies/{cid}", json=body))


def test_company_create_and_skills_field_errors(ops: httpx.Client) -> None:
    assert ["body", "skills", 0, "level"] in _locs(
        ops.post("/api/admin/companies", json={**COMPANY, "skills": [{"skill": "x", "level": "guru"}]})
    )
    assert ["body", "name"] in _locs(ops.post("/api/admin/companies", json={"trade": "x"}))
    cid = _create(ops)["id"]
    dup = ops.put(f"/api/admin/companies/{cid}/skills", json={"skills": [{"skill": "a"}, {"skill": "A"}]})
    assert ["body", "skills"] in _locs(dup) and "listed twice" in dup.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/admin/companies/{id}"),
        ("PATCH", "/api/admin/companies/{id}"),
        ("POST", "/api/admin/companies/{id}/disable"),
        ("POST", "/api/admin/companies/{id}/enable"),
        ("PUT", "/api/admin/companies/{id}/skills"),
        ("GET", "/api/admin/companies/{id}/technicians"),
        ("POST", "/api/admin/companies/{id}/technicians"),
        ("GET", "/api/admin/companies/{id}/connection"),
        ("PUT", "/api/admin/companies/{id}/connection"),
        ("PATCH", "/api/admin/companies/{id}/connection"),
        ("POST", "/api/admin/companies/{id}/connection/enable"),
        ("POST", "/api/admin/companies/{id}/connection/disable"),
        ("POST", "/api/admin/companies/{id}/connection/test"),
    ],
)
def test_unknown_company_is_404(ops: httpx.Client, method: str, path: str) -> None:
    bodies = {
        "PATCH": {},
        "PUT": {"skills": []} if path.endswith("skills") else connection_json("501"),
        "POST": {"name": "Tech"} if path.endswith("technicians") else None,
    }
    r = ops.request(method, path.format(id=uuid.uuid4()), json=bodies.get(method))
    assert r.status_code == 404, r.text
    assert "not found" in r.json()["detail"]


def test_malformed_ids_are_422(ops: httpx.Client) -> None:
    assert ["path", "company_id"] in _locs(ops.get("/api/admin/companies/not-a-uuid"))
    assert ["path", "routing_id"] in _locs(ops.post("/api/routings/42/retry"))


def test_technicians(ops: httpx.Client, db: Engine) -> None:
    cid = _create(ops)["id"]
    other = _create(ops, name="Other Co")["id"]
    r = ops.post(f"/api/admin/companies/{cid}/technicians", json={"name": "Rosa Tech", "phone": "512-555-0101"})
    assert r.status_code == 201, r.text
    tech = r.json()
    assert tech["active"] is True and tech["company_id"] == cid
    assert ["body", "email"] in _locs(
        ops.post(f"/api/admin/companies/{cid}/technicians", json={"name": "X", "email": "not-an-email"})
    )
    assert ops.get(f"/api/admin/companies/{cid}/technicians").json()[0]["name"] == "Rosa Tech"
    assert ops.get(f"/api/admin/companies/{cid}").json()["technicians"] == 1

    off = ops.post(f"/api/admin/companies/{cid}/technicians/{tech['id']}/disable")
    assert off.status_code == 200 and off.json()["active"] is False
    assert ops.get(f"/api/admin/companies/{cid}").json()["technicians"] == 0
    # a technician is only reachable under their own company
    assert ops.post(f"/api/admin/companies/{other}/technicians/{tech['id']}/enable").status_code == 404
    assert ops.post(f"/api/admin/companies/{cid}/technicians/{uuid.uuid4()}/disable").status_code == 404
    assert ops.post(f"/api/admin/companies/{cid}/technicians/{tech['id']}/enable").json()["active"] is True

    # a disabled technician can no longer refer work
    ops.post(f"/api/admin/companies/{cid}/technicians/{tech['id']}/disable")
    job = {
        "summary": "Leak",
        "address": {"street": "1 Main St", "city": "Austin", "state": "TX", "zip_code": "78701"},
        "homeowner": {"name": "H", "phone": "512-555-0100"},
        "created_by_company_id": cid,
        "created_by_technician_id": tech["id"],
    }
    assert ops.post("/api/jobs/", json=job).status_code == 422


def _no_secret(*texts: str) -> None:
    for t in texts:
        for s in SECRETS:
            assert s not in t, f"secret fragment {s!r} leaked"


def test_connection_create_replace_patch_toggle_with_write_only_secrets(
    ops: httpx.Client, db: Engine, world: World
) -> None:
    cid = _create(ops)["id"]
    assert ops.get(f"/api/admin/companies/{cid}/connection").status_code == 404
    routings = add_routings(db, world, uuid.UUID(cid), 3)
    with db.begin() as conn:  # routed before the company was connected
        conn.execute(text("UPDATE job_routings SET status = 'no_integration'"))

    created = ops.put(f"/api/admin/companies/{cid}/connection", json=connection_json("501"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["account_id"] == "501" and body["enabled"] is True and body["health"] == "unknown"
    assert body["provider"] == "servicetitan" and body["settings"]["tenant_id"] == "501"
    assert body["secrets_set"] == {"client_id": True, "client_secret": True, "app_key": True}
    assert not {"client_id", "client_secret", "app_key"} & (set(body) | set(body["settings"]))
    with db.connect() as conn:  # enabling released the waiting routings
        assert conn.execute(text("SELECT array_agg(DISTINCT status) FROM job_routings")).scalar() == ["pending"]

    replaced = ops.put(
        f"/api/admin/companies/{cid}/connection", json={**connection_json("502"), "client_secret": "cs1.rotated-0001"}
    )
    assert replaced.status_code == 200 and replaced.json()["account_id"] == "502"
    assert replaced.json()["id"] == body["id"]

    patched = ops.patch(
        f"/api/admin/companies/{cid}/connection", json={"priority": "High", "rate_limit_per_second": 30}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["settings"]["priority"] == "High" and patched.json()["rate_limit_per_second"] == 30

    off = ops.post(f"/api/admin/companies/{cid}/connection/disable")
    assert off.status_code == 200 and off.json()["connection"]["enabled"] is False
    assert off.json()["routings_moved"] == len(routings)
    on = ops.post(f"/api/admin/companies/{cid}/connection/enable")
    assert on.json()["connection"]["enabled"] is True and on.json()["routings_moved"] == len(routings)

    summary = ops.get(f"/api/admin/companies/{cid}").json()["provider"]
    assert summary["configured"] and summary["enabled"] and summary["account_id"] == "502"

    everything = [created.text, replaced.text, patched.text, off.text, on.text]
    everything += [ops.get("/api/admin/providers").text, ops.get(f"/api/admin/companies/{cid}/connection").text]
    audit = audit_rows(db)
    _no_secret(*everything, json.dumps(audit, default=str), "cs1.rotated-0001")
    assert "rotated-0001" not in json.dumps(audit, default=str) + "".join(everything)
    assert {"connection.created", "connection.updated", "connection.enabled", "connection.disabled"} <= {
        a["action"] for a in audit
    }
    with db.connect() as conn:  # stored encrypted
        stored: tuple[str, str] = (
            conn.execute(
                text(
                    "SELECT secrets_encrypted->>'client_secret', secrets_encrypted->>'app_key' "
                    "FROM provider_connections"
                )
            )
            .tuples()
            .one()
        )
    assert all(v.startswith("v1:") for v in stored) and not any(s in "".join(stored) for s in SECRETS)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"client_secret": "cs1.x"}, ["body", "client_secret"]),  # secrets only through PUT
        ({"delivery_mode": "fax"}, ["body", "delivery_mode"]),
        ({"rate_limit_per_second": 0}, ["body", "rate_limit_per_second"]),
        ({"tenant_id": "abc"}, ["body", "tenant_id"]),
        ({"tenant_id": None}, ["body", "tenant_id"]),
        ({"booking_provider_id": None}, ["body", "booking_provider_id"]),  # booking mode needs it
        ({"environment": "sandbox", "base_url": None}, ["body", "base_url"]),
        ({"external_data_guid": "not-a-guid"}, ["body", "external_data_guid"]),
    ],
)
def test_connection_patch_field_errors(ops: httpx.Client, body: dict[str, Any], loc: list[object]) -> None:
    cid = _create(ops)["id"]
    assert ops.put(f"/api/admin/companies/{cid}/connection", json=connection_json("501")).status_code == 201
    r = ops.patch(f"/api/admin/companies/{cid}/connection", json=body)
    assert loc in _locs(r)
    _no_secret(r.text)


def test_connection_put_field_errors_never_echo_secrets(ops: httpx.Client) -> None:
    cid = _create(ops)["id"]
    bad = {**connection_json("501"), "delivery_mode": "job", "business_unit_id": None}
    r = ops.put(f"/api/admin/companies/{cid}/connection", json=bad)
    assert r.status_code == 422 and "business_unit_id" in r.text
    _no_secret(r.text)
    r = ops.put(f"/api/admin/companies/{cid}/connection", json={**connection_json("501"), "client_secret": 5})
    assert r.status_code == 422
    _no_secret(r.text)


def test_connection_test_endpoint_checks_the_provider_now(ops: httpx.Client, sandbox: SandboxHandle) -> None:
    t = sandbox.create_tenant(tenant_id=str(880000 + uuid.uuid4().int % 10_000), client_secret="cs1.right-secret-000")
    cid = _create(ops)["id"]
    body = {
        **connection_json(t.tenant_id, base_url=sandbox.url),
        "client_id": t.client_id,
        "client_secret": t.client_secret,
        "app_key": t.app_key,
        "booking_provider_id": t.booking_provider_id,
    }
    assert ops.put(f"/api/admin/companies/{cid}/connection", json=body).status_code == 201
    r = ops.post(f"/api/admin/companies/{cid}/connection/test")
    assert r.status_code == 200, r.text
    assert r.json()["health"] == "healthy" and r.json()["error"] is None
    assert ops.get(f"/api/admin/companies/{cid}/connection").json()["health"] == "healthy"

    ops.put(f"/api/admin/companies/{cid}/connection", json={**body, "client_secret": "cs1.wrong-secret-999"})
    r = ops.post(f"/api/admin/companies/{cid}/connection/test")
    assert r.status_code == 200 and r.json()["health"] == "unhealthy" and r.json()["error_code"]
    assert "wrong-secret-999" not in r.text and "right-secret" not in r.text
