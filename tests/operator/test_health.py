"""Health endpoints over real HTTP: database, provider connections (real sandbox), Dagster (real webserver),
sandbox; required components; caching; no secrets. Public health answers status only (cached, no provider call);
the details need the token."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from integration_core.settings import Settings
from tests.support.api import serve_api
from tests.support.config import DEAD_URL, with_settings
from tests.support.dagster import DagsterHandle
from tests.support.sandbox import SandboxHandle
from tests.support.world import add_receiver


def _get(client: httpx.Client, path: str) -> httpx.Response:
    return httpx.get(str(client.base_url) + path, timeout=60)  # no token: public health


def _details(client: httpx.Client, path: str = "") -> httpx.Response:
    return client.get("/api/admin/health" + path)  # the client sends the token


# --- public: status only, cached, no live provider call ----------------------------------------------------


def test_overall_health_is_public_and_answers_status_only(db: Engine, settings: Settings) -> None:
    with serve_api(db, with_settings(settings, dagster_webserver_url=DEAD_URL)) as client:
        r = _get(client, "/api/health")
        assert r.status_code == 200, r.text
        # Dagster and the sandbox are down here, but not required: reported, still 200
        assert r.json() == {
            "status": "degraded",
            "components": {
                "db": {"status": "up"},
                "providers": {"status": "up"},
                "dagster": {"status": "down"},
                "sandbox": {"status": "down"},
            },
        }
        assert _get(client, "/api/health/").status_code == 200
        # the details are behind the token
        details = _details(client)
        assert details.status_code == 200 and details.json()["required"] == ["db"]
        assert "dagster unavailable" in details.json()["components"]["dagster"]["error"]
        assert httpx.get(str(client.base_url) + "/api/admin/health", timeout=60).status_code == 401


def test_public_health_carries_no_ids_urls_errors_or_counts(
    db: Engine, settings: Settings, sandbox: SandboxHandle, dagster_web: DagsterHandle
) -> None:
    company, tenant = add_receiver(db, sandbox, client_secret="cs1.definitely-wrong-secret")
    dagster_web.queue_run("c1")
    s = with_settings(settings, dagster_webserver_url=dagster_web.url, servicetitan_sandbox_url=sandbox.url)
    with serve_api(db, s) as client:
        assert _details(client, "/component/providers").status_code == 503  # a live check stored `unhealthy`
        bodies = [_get(client, "/api/health").text]
        bodies += [_get(client, f"/api/health/component/{name}").text for name in ("db", "providers", "dagster")]
    for body in bodies:
        for leak in (str(company), tenant, "127.0.0.1", "http", "error", "queued", "connections", "webserver"):
            assert leak not in body, (leak, body)
    assert '"providers":{"status":"down"}' in bodies[0].replace(" ", "")


def test_anonymous_health_never_calls_a_provider(db: Engine, settings: Settings, sandbox: SandboxHandle) -> None:
    _, tenant = add_receiver(db, sandbox)
    with serve_api(db, with_settings(settings, health_cache_seconds=0, health_public_cache_seconds=0)) as client:
        before = _requests(sandbox, tenant)
        for _ in range(5):
            assert _get(client, "/api/health/component/providers").json() == {
                "component": "providers",
                "status": "degraded",  # never checked yet: `unknown`
            }
            _get(client, "/api/health")
        assert _requests(sandbox, tenant) == before
        # what a check stores (here the detailed view's live check) is what public health then reports
        assert _details(client, "/component/providers").json()["connections"][0]["health"] == "healthy"
        assert _requests(sandbox, tenant) > before
        assert _get(client, "/api/health/component/providers").json()["status"] == "up"


def test_public_answers_are_cached(db: Engine, ops_settings: Settings, dagster_web: DagsterHandle) -> None:
    with serve_api(db, with_settings(ops_settings, health_public_cache_seconds=3600)) as client:
        assert _get(client, "/api/health/component/dagster").status_code == 503  # no daemon heartbeat yet
        dagster_web.heartbeat()
        assert _details(client, "/component/dagster").status_code == 200  # the details are never cached
        # within HEALTH_PUBLIC_CACHE_SECONDS public health answers what it found before
        assert _get(client, "/api/health/component/dagster").status_code == 503
        assert _get(client, "/api/health").json()["components"]["dagster"] == {"status": "down"}
    with serve_api(db, with_settings(ops_settings, health_public_cache_seconds=0)) as client:
        assert _get(client, "/api/health/component/dagster").json() == {"component": "dagster", "status": "up"}


def test_a_required_component_down_makes_health_503(db: Engine, settings: Settings) -> None:
    s = with_settings(settings, dagster_webserver_url=DEAD_URL, health_required_components="db,dagster")
    with serve_api(db, s) as client:
        r = _get(client, "/api/health")
        assert r.status_code == 503 and r.json()["status"] == "unhealthy"
        component = _get(client, "/api/health/component/dagster")
        assert component.status_code == 503 and component.json() == {"component": "dagster", "status": "down"}
        details = _details(client)
        assert details.status_code == 503 and details.json()["required"] == ["dagster", "db"]
        assert _details(client, "/component/dagster").status_code == 503


def test_database_down_is_503_never_500(settings: Settings) -> None:
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none", pool_pre_ping=True)
    with serve_api(dead, with_settings(settings, dagster_webserver_url=DEAD_URL)) as client:
        r = _get(client, "/api/health")
        assert r.status_code == 503
        assert r.json()["components"]["db"] == {"status": "down"}
        assert r.json()["components"]["providers"] == {"status": "down"}
        assert _get(client, "/api/health/component/db").status_code == 503
        details = _details(client)
        assert details.status_code == 503 and "127.0.0.1:9" not in details.json()["components"]["db"]["error"]
        # the rest of the API says the database is unavailable: 503, not 500
        assert client.get("/api/admin/companies").status_code == 503


@pytest.mark.parametrize("component", ["db", "providers", "dagster", "sandbox"])
def test_component_endpoints_need_no_token(api: str, component: str) -> None:
    r = httpx.get(f"{api}/api/health/component/{component}", timeout=60)
    assert r.status_code in (200, 503)
    assert set(r.json()) == {"component", "status"} and r.json()["component"] == component


def test_unknown_component_is_404(api: str, client: httpx.Client) -> None:
    r = httpx.get(api + "/api/health/component/redis")
    assert r.status_code == 404 and "db, providers, dagster, sandbox" in r.json()["detail"]
    assert client.get("/api/admin/health/component/redis").status_code == 404


# --- details (token): what each check found ----------------------------------------------------------------


def test_dagster_component_up_with_heartbeats_and_run_queue(
    db: Engine, ops_settings: Settings, dagster_web: DagsterHandle
) -> None:
    dagster_web.queue_run("c1")
    dagster_web.start_run("c2")
    with serve_api(db, ops_settings) as client:
        down = _details(client, "/component/dagster")
        assert down.status_code == 503  # reachable, but no daemon heartbeats
        assert "daemon not heartbeating" in down.json()["error"]
        dagster_web.heartbeat()
        r = _details(client, "/component/dagster")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "up" and body["run_queue"] == {"queued": 1, "in_progress": 1}
        assert all(d["healthy"] and d["heartbeat_age_seconds"] < 60 for d in body["daemons"] if d["required"])


def test_sandbox_component(db: Engine, settings: Settings, sandbox: SandboxHandle) -> None:
    with serve_api(db, with_settings(settings, servicetitan_sandbox_url=sandbox.url)) as client:
        r = _get(client, "/api/health/component/sandbox")
        assert r.status_code == 200 and r.json()["status"] == "up"
        assert _details(client, "/component/sandbox").json()["definitions_loaded"] is True
    with serve_api(db, with_settings(settings, servicetitan_env="production")) as client:
        r = _get(client, "/api/health/component/sandbox")
        assert r.status_code == 200 and r.json()["status"] == "disabled"
    with serve_api(db, settings) as client:  # SERVICETITAN_SANDBOX_URL points at a closed port
        assert _get(client, "/api/health/component/sandbox").status_code == 503


def _requests(sandbox: SandboxHandle, tenant: str) -> int:
    return int(sandbox.inspect(tenant)["requests_total"])


def test_providers_check_every_enabled_connection_and_cache_the_result(
    db: Engine, settings: Settings, sandbox: SandboxHandle
) -> None:
    _company, tenant = add_receiver(db, sandbox)
    with serve_api(db, settings) as client:
        r = _details(client, "/component/providers")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "up" and body["enabled_connections"] == 1 and body["healthy"] == 1
        [conn] = body["connections"]
        assert conn["account_id"] == tenant and conn["health"] == "healthy" and conn["cached"] is False
        sent = _requests(sandbox, tenant)
        assert sent >= 2  # a token and a cheap read, at least

        # within HEALTH_CACHE_SECONDS nobody calls ServiceTitan again, however often health is asked
        for _ in range(5):
            again = _details(client)
            assert again.json()["components"]["providers"]["connections"][0]["cached"] is True
        assert _requests(sandbox, tenant) == sent

    with db.connect() as c:
        health, checked = c.execute(text("SELECT health, health_checked_at FROM provider_connections")).one()
    assert health == "healthy" and checked is not None


def test_providers_cache_expires(db: Engine, settings: Settings, sandbox: SandboxHandle) -> None:
    _, tenant = add_receiver(db, sandbox)
    with serve_api(db, with_settings(settings, health_cache_seconds=0)) as client:
        _details(client, "/component/providers")
        sent = _requests(sandbox, tenant)
        assert _details(client, "/component/providers").json()["connections"][0]["cached"] is False
        assert _requests(sandbox, tenant) > sent


def test_rejected_credentials_are_unhealthy_without_leaking_them(
    db: Engine, settings: Settings, sandbox: SandboxHandle
) -> None:
    add_receiver(db, sandbox, client_secret="cs1.definitely-wrong-secret")
    with serve_api(db, settings) as client:
        r = _details(client, "/component/providers")
        assert r.status_code == 503  # the only connection is unhealthy: the component is down
        [conn] = r.json()["connections"]
        assert conn["health"] == "unhealthy" and conn["error_code"] and conn["error"]
        overall = _details(client)
        assert overall.status_code == 200  # providers are not required by default
        for text_ in (r.text, overall.text):
            assert "definitely-wrong-secret" not in text_ and "ak1.test" not in text_ and "cid.t" not in text_
    with db.connect() as c:
        health, error = c.execute(text("SELECT health, last_error FROM provider_connections")).one()
    assert health == "unhealthy" and "definitely-wrong-secret" not in str(error or "")


def test_disabled_connections_are_not_checked(db: Engine, settings: Settings, sandbox: SandboxHandle) -> None:
    add_receiver(db, sandbox)
    with db.begin() as c:
        c.execute(text("UPDATE provider_connections SET enabled = false"))
    with serve_api(db, settings) as client:
        body = _details(client, "/component/providers").json()
    assert body["status"] == "up" and body["enabled_connections"] == 0
