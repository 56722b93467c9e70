"""Connection input over the real API (issue 10's findings, both providers): base URLs only on the provider's
own hosts outside the sandbox environment and on loopback inside it (no port probes through /connection/test),
bounded rates and bursts, bounded secrets without NUL or control characters — each a 422 naming the field,
nothing stored, no secret echoed. Also: a connection names its provider, and shows its secrets only as set
flags."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.support.operator import SECRETS, connection_json
from tests.support.world import add_routings, make_world

HCP_KEY = "hcp-api-key-value-4242"


def _company(client: httpx.Client) -> str:
    r = client.post("/api/admin/companies", json={"name": "Input Co", "service_zip_codes": ["90210"]})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _hcp(**over: Any) -> dict[str, Any]:
    return {
        "provider": "housecallpro",
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:8101",
        "company_id": "cmp_input",
        "api_key": HCP_KEY,
        **over,
    }


def _refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["detail"]]
    assert any(loc[0] == "body" and loc[-1] == field for loc in locs), locs
    for secret in (*SECRETS, HCP_KEY):
        assert secret not in r.text


@pytest.mark.parametrize(
    ("over", "field"),
    [
        # sandbox environment: loopback only (a link-local metadata address, a private host, a public name)
        ({"base_url": "http://169.254.169.254/latest/meta-data"}, "base_url"),
        ({"base_url": "http://10.0.0.5:8100"}, "base_url"),
        ({"base_url": "http://example.com:8100"}, "base_url"),
        ({"base_url": "ftp://127.0.0.1:21"}, "base_url"),
        ({"base_url": "http://user:pw@127.0.0.1:8100"}, "base_url"),
        # elsewhere: ServiceTitan's own hosts over https only
        ({"environment": "production", "base_url": "https://evil.example.com"}, "base_url"),
        ({"environment": "production", "base_url": "http://api.servicetitan.io"}, "base_url"),
        ({"environment": "integration", "base_url": "https://127.0.0.1:8100"}, "base_url"),
        # rates and bursts
        ({"rate_limit_per_second": 1e-300}, "rate_limit_per_second"),
        ({"rate_limit_per_second": 0.05}, "rate_limit_per_second"),
        ({"rate_limit_per_second": 101}, "rate_limit_per_second"),
        ({"rate_limit_burst": 0}, "rate_limit_burst"),
        ({"rate_limit_burst": 101}, "rate_limit_burst"),
        # secrets: bounded, no NUL, no control characters
        ({"client_secret": "cs1." + "x" * 5000}, "client_secret"),
        ({"client_secret": "cs1.with\x00nul"}, "client_secret"),
        ({"app_key": "ak1.with\x01control"}, "app_key"),
        ({"client_id": "cid.line\nbreak"}, "client_id"),
        ({"client_secret": "   "}, "client_secret"),
        # ServiceTitan ids within bigint
        ({"booking_provider_id": 2**63}, "booking_provider_id"),
    ],
)
def test_servicetitan_connection_input_is_refused_field_by_field(
    client: httpx.Client, over: dict[str, Any], field: str
) -> None:
    cid = _company(client)
    r = client.put(f"/api/admin/companies/{cid}/connection", json={**connection_json("501"), **over})
    _refused(r, field)
    assert client.get(f"/api/admin/companies/{cid}/connection").status_code == 404  # nothing stored
    assert client.post(f"/api/admin/companies/{cid}/connection/test").status_code == 404  # nothing to probe


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"base_url": "http://169.254.169.254"}, "base_url"),
        ({"environment": "production", "base_url": "https://api.servicetitan.io"}, "base_url"),
        ({"environment": "production", "base_url": "http://api.housecallpro.com"}, "base_url"),
        ({"environment": "integration"}, "environment"),  # Housecall Pro has no integration environment
        ({"api_key": "k" * 4097}, "api_key"),
        ({"api_key": "hcp\x00key"}, "api_key"),
        ({"api_key": "hcp\x7fkey"}, "api_key"),
        ({"rate_limit_per_second": 0}, "rate_limit_per_second"),
        ({"rate_limit_burst": 1000}, "rate_limit_burst"),
        ({"delivery_mode": "booking"}, "delivery_mode"),
    ],
)
def test_housecallpro_connection_input_is_refused_field_by_field(
    client: httpx.Client, over: dict[str, Any], field: str
) -> None:
    cid = _company(client)
    _refused(client.put(f"/api/admin/companies/{cid}/connection", json=_hcp(**over)), field)
    assert client.get(f"/api/admin/companies/{cid}/connection").status_code == 404


def test_unknown_provider_is_refused(client: httpx.Client) -> None:
    cid = _company(client)
    r = client.put(f"/api/admin/companies/{cid}/connection", json={**connection_json("501"), "provider": "jobber"})
    assert r.status_code == 422 and "provider" in r.text


def test_accepted_connections_name_their_provider_and_show_secrets_only_as_set_flags(client: httpx.Client) -> None:
    st = _company(client)
    r = client.put(
        f"/api/admin/companies/{st}/connection",
        json={
            **connection_json("501"),
            "environment": "production",
            "base_url": "https://api.servicetitan.io",
            "rate_limit_per_second": 100,
            "rate_limit_burst": 100,
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["provider"] == "servicetitan" and r.json()["account_id"] == "501"

    hcp = _company(client)
    r = client.put(f"/api/admin/companies/{hcp}/connection", json=_hcp(rate_limit_per_second=0.1))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["provider"] == "housecallpro" and body["account_id"] == "cmp_input"
    assert body["delivery_mode"] == "lead" and body["rate_limit_per_second"] == 0.1
    assert body["secrets_set"] == {"api_key": True} and body["settings"]["company_id"] == "cmp_input"
    everything = r.text + client.get("/api/admin/providers").text + client.get(f"/api/admin/companies/{hcp}").text
    assert HCP_KEY not in everything and "api_key" not in body["settings"]
    assert client.get(f"/api/admin/companies/{hcp}").json()["provider"]["provider"] == "housecallpro"

    r = client.put(
        f"/api/admin/companies/{hcp}/connection",
        json=_hcp(environment="production", base_url="https://api.housecallpro.com"),
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate_limit_per_second": 1e-300}, "rate_limit_per_second"),
        ({"rate_limit_burst": 500}, "rate_limit_burst"),
        ({"base_url": "http://169.254.169.254"}, "base_url"),
        ({"environment": "production", "base_url": "https://metadata.internal"}, "base_url"),
        ({"api_key": "hcp-new"}, "api_key"),  # secrets only through PUT
        ({"provider": "servicetitan"}, "provider"),  # a connection's provider does not change
        ({"lead_source": "line\x00nul"}, "lead_source"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_patch_is_held_to_the_same_rules(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    cid = _company(client)
    assert client.put(f"/api/admin/companies/{cid}/connection", json=_hcp()).status_code == 201
    _refused(client.patch(f"/api/admin/companies/{cid}/connection", json=body), field)
    stored = client.get(f"/api/admin/companies/{cid}/connection").json()
    assert stored["base_url"] == "http://127.0.0.1:8101" and stored["rate_limit_per_second"] == 5


def test_patch_changes_a_providers_own_setting(client: httpx.Client) -> None:
    cid = _company(client)
    assert client.put(f"/api/admin/companies/{cid}/connection", json=_hcp()).status_code == 201
    r = client.patch(
        f"/api/admin/companies/{cid}/connection", json={"lead_source": "Referral network", "rate_limit_per_second": 2}
    )
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["lead_source"] == "Referral network" and r.json()["rate_limit_per_second"] == 2
    assert r.json()["secrets_set"] == {"api_key": True}  # the key was kept


def test_dry_run_of_a_housecallpro_routing_is_rendered_by_its_provider(client: httpx.Client, db: Engine) -> None:
    """The dry run works through the provider boundary: Housecall Pro's own URLs and bodies, the key redacted,
    and the shared decision (a routing whose outcome is unknown is looked up first)."""
    cid = _company(client)
    assert client.put(f"/api/admin/companies/{cid}/connection", json=_hcp()).status_code == 201
    [routing] = add_routings(db, make_world(db), uuid.UUID(cid), 1)
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET lookup_required = true, attempts = 1 WHERE id = :r"), {"r": routing})
    r = client.post(f"/api/routings/{routing}/dry-run")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["connection"]["provider"] == "housecallpro" and out["connection"]["account_id"] == "cmp_input"
    assert (
        out["would_send"] is True and out["lookup_required"] is True and "looks the marker up first" in out["decision"]
    )
    assert out["requests"] and all(q["url"].startswith("http://127.0.0.1:8101/") for q in out["requests"])
    assert out["requests"][0]["method"] == "GET"  # the lookup comes first
    assert HCP_KEY not in r.text and "servicetitan" not in r.text.lower()
