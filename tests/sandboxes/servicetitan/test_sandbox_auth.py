"""Sandbox: ServiceTitan's token endpoint and the auth rules on tenant calls (over real HTTP)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import httpx

from tests.support.sandbox import BOOKINGS, SandboxHandle, TenantClient, TenantCreds

CUSTOMERS = "/crm/v2/tenant/{tenant}/customers"


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def test_token_is_issued_like_servicetitan(st_client: httpx.Client, demo_tenant: TenantCreds) -> None:
    response = st_client.post("/connect/token", data=demo_tenant.token_form())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "scope"}
    assert body["expires_in"] == 900 and body["token_type"] == "Bearer"
    assert "tn.crm.bookings:w" in body["scope"].split()
    claims = claims_of(body["access_token"])
    assert claims["tenant"] == demo_tenant.tenant_id and claims["client_id"] == demo_tenant.client_id
    assert claims["exp"] == claims["nbf"] + 900  # type: ignore[operator]


def test_bad_credentials_and_grant_types(st_client: httpx.Client, demo_tenant: TenantCreds) -> None:
    wrong_secret = {**demo_tenant.token_form(), "client_secret": "cs1.nope"}
    assert st_client.post("/connect/token", data=wrong_secret).json() == {"error": "invalid_client"}
    unknown = {**demo_tenant.token_form(), "client_id": "cid.nobody"}
    response = st_client.post("/connect/token", data=unknown)
    assert (response.status_code, response.json()) == (400, {"error": "invalid_client"})
    password = {**demo_tenant.token_form(), "grant_type": "password"}
    response = st_client.post("/connect/token", data=password)
    assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type")
    response = st_client.post("/connect/token", json=demo_tenant.token_form())  # not form-encoded
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


def test_basic_auth_client_credentials_are_accepted(st_client: httpx.Client, demo_tenant: TenantCreds) -> None:
    response = st_client.post(
        "/connect/token",
        data={"grant_type": "client_credentials"},
        auth=(demo_tenant.client_id, demo_tenant.client_secret),
    )
    assert response.status_code == 200


def test_calls_need_a_live_bearer_token_and_the_app_key(st: TenantClient) -> None:
    assert st.get(CUSTOMERS).status_code == 200
    no_token = st.client.get(st.path(CUSTOMERS), headers={"ST-App-Key": st.creds.app_key})
    assert no_token.status_code == 401 and no_token.json()["status"] == 401
    garbage = st.get(CUSTOMERS, headers={"Authorization": "Bearer not.a.token"})
    assert garbage.status_code == 401
    no_app_key = st.client.get(st.path(CUSTOMERS), headers={"Authorization": f"Bearer {st.token}"})
    assert no_app_key.status_code == 401
    assert "ST-App-Key" in no_app_key.json()["title"]
    unknown_app = st.get(CUSTOMERS, headers={"ST-App-Key": "ak1.someone-else"})
    assert unknown_app.status_code == 403
    assert set(unknown_app.json()) == {"type", "title", "status", "traceId", "errors", "data"}


def test_token_of_another_tenant_is_forbidden(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds]
) -> None:
    a, b = fresh_tenant(), fresh_tenant()
    as_a = TenantClient(st_client, a)
    response = st_client.get(f"/crm/v2/tenant/{b.tenant_id}/customers", headers=a.headers(as_a.token))
    assert response.status_code == 403
    assert response.json()["status"] == 403


def test_expired_token_is_rejected(
    st_client: httpx.Client, sandbox: SandboxHandle, fresh_tenant: Callable[..., TenantCreds]
) -> None:
    creds = fresh_tenant(token_lifetime_s=2)  # long enough for the calls below on a busy machine
    client = TenantClient(st_client, creds)
    assert client.get(CUSTOMERS).status_code == 200
    time.sleep(2.2)
    assert client.get(CUSTOMERS).status_code == 401
    client.token = client.fetch_token()  # what a client does on 401: fetch a new token, retry once
    assert client.get(CUSTOMERS).status_code == 200


def test_revoked_tokens_are_rejected(st: TenantClient, sandbox: SandboxHandle) -> None:
    assert st.get(CUSTOMERS).status_code == 200
    assert sandbox.revoke_tokens(st.creds.tenant_id)["revoked"] >= 1
    assert st.get(CUSTOMERS).status_code == 401
    st.token = st.fetch_token()
    assert st.get(CUSTOMERS).status_code == 200


def test_five_fresh_tenants_with_given_or_generated_credentials(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    given = fresh_tenant(tenant_id="777001", client_id="cid.given", client_secret="cs1.given", app_key="ak1.given")
    assert (given.tenant_id, given.client_id, given.app_key) == ("777001", "cid.given", "ak1.given")
    tenants = [given] + [fresh_tenant() for _ in range(4)]
    assert len({t.tenant_id for t in tenants}) == 5 and len({t.client_id for t in tenants}) == 5
    for creds in tenants:
        client = TenantClient(st_client, creds)
        assert client.create_booking(f"R-{creds.tenant_id}")["bookingProviderId"] == creds.booking_provider_id
        assert sandbox.inspect(creds.tenant_id)["records"]["bookings"] == 1
    duplicate = httpx.post(f"{sandbox.url}/_sandbox/tenants", json={"tenant_id": "777001"})
    assert duplicate.status_code == 409


def test_token_requests_do_not_spend_the_tenant_budget(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    creds = fresh_tenant(rate=0.5, burst=1)
    client = TenantClient(st_client, creds)
    for _ in range(3):
        client.token = client.fetch_token()
    assert client.get(BOOKINGS).status_code == 200  # the single token of the bucket is still there
    report = sandbox.inspect(creds.tenant_id)
    assert report["tokens_issued"] == 4 and report["rate_limited"] == 0
