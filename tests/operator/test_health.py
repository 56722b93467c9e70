"""Health endpoints over real HTTP: database, provider connections (real sandbox), Dagster (real webserver),
sandbox; required components; caching; no secrets."""

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
    return httpx.get(str(client.base_url) + path, timeout=60)  # no token: health is public


def test_overall_health_is_public_and_lists_every_component(db: Engine, settings: Settings) -> None:
    with serve_api(db, with_settings(settings, dagster_webserver_url=DEAD_URL)) as client:
        r = _get(client, "/api/health")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body["components"]) == {"db", "providers", "dagster", "sandbox"}
        assert body["required"] == ["db"]
        assert body["components"]["db"]["status"] == "up" and body["components"]["db"]["required"] is True
        # Dagster and the sandbox are down here, but not required: reported, still 200
        assert body["components"]["dagster"]["status"] == "down"
        assert "dagster unavailable" in body["components"]["dagster"]["error"]
        assert body["status"] == "degraded"
        assert _get(client, "/api/health/").status_code == 200


def test_a_required_component_down_makes_health_503(db: Engine, settings: Settings) -> None:
    s = with_settings(settings, dagster_webserver_url=DEAD_URL, health_required_components="db,dagster")
    with serve_api(db, s) as client:
        r = _get(client, "/api/health")
        assert r.status_code == 503
        assert r.json()["status"] == "unhealthy" and r.json()["required"] == ["dagster", "db"]
        component = _get(client, "/api/health/component/dagster")
        assert component.status_code == 503 and component.json()["component"] == "dagster"


def test_database_down_is_503_never_500(settings: Settings) -> None:
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none", pool_pre_ping=True)
    with serve_api(dead, with_settings(settings, dagster_webserver_url=DEAD_URL)) as client:
        r = _get(client, "/api/health")
        assert r.status_code == 503
        assert r.json()["components"]["db"]["status"] == "down"
        assert r.json()["components"]["providers"]["status"] == "down"
        assert "127.0.0.1:9" not in r.json()["components"]["db"]["error"]
        assert _get(client, "/api/health/component/db").status_code == 503
        # the rest of the API says the database is unavailable: 503, not 500
        assert client.get("/api/admin/companies").status_code == 503


def test_dagster_component_up_with_heartbeats_and_run_queue(
    db: Engine, ops_settings: Settings, dagster_web: DagsterHandle
) -> None:
    dagster_web.queue_run("c1")
    dagster_web.start_run("c2")
    with serve_api(db, ops_settings) as client:
        down = _get(client, "/api/health/component/dagster")
        assert down.status_code == 503  # reachable, but no daemon heartbeats
        assert "daemon not heartbeating" in down.json()["error"]
        dagster_web.heartbeat()
        r = _get(client, "/api/health/component/dagster")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "up" and body["run_queue"] == {"queued": 1, "in_progress": 1}
        assert all(d["healthy"] and d["heartbeat_age_seconds"] < 60 for d in body["daemons"] if d["required"])


def test_unknown_component_is_404(api: str) -> None:
    r = httpx.get(api + "/api/health/component/redis")
    assert r.status_code == 404 and "db, providers, dagster, sandbox" in r.json()["detail"]


def test_sandbox_component(db: Engine, settings: Settings, sandbox: SandboxHandle) -> None:
    with serve_api(db, with_settings(settings, servicetitan_sandbox_url=sandbox.url)) as client:
        r = _get(client, "/api/health/component/sandbox")
        assert r.status_code == 200 and r.json()["status"] == "up"
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
        r = _get(client, "/api/health/component/providers")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "up" and body["enabled_connections"] == 1 and body["healthy"] == 1
        [conn] = body["connections"]
        assert conn["tenant_id"] == tenant and conn["health"] == "healthy" and conn["cached"] is False
        sent = _requests(sandbox, tenant)
        assert sent >= 2  # a token and a cheap read, at least

        # within HEALTH_CACHE_SECONDS nobody calls ServiceTitan again, however often health is asked
        for _ in range(5):
            again = _get(client, "/api/health")
            assert again.json()["components"]["providers"]["connections"][0]["cached"] is True
        assert _requests(sandbox, tenant) == sent

    with db.connect() as c:
        health, checked = c.execute(text("SELECT health, health_checked_at FROM provider_connections")).one()
    assert health == "healthy" and checked is not None


def test_providers_cache_expires(db: Engine, settings: Settings, sandbox: SandboxHandle) -> None:
    _, tenant = add_receiver(db, sandbox)
    with serve_api(db, with_settings(settings, health_cache_seconds=0)) as client:
        _get(client, "/api/health/component/providers")
        sent = _requests(sandbox, tenant)
        assert _get(client, "/api/health/component/providers").json()["connections"][0]["cached"] is False
        assert _requests(sandbox, tenant) > sent


def test_rejected_credentials_are_unhealthy_without_leaking_them(
    db: Engine, settings: Settings, sandbox: SandboxHandle
) -> None:
    add_receiver(db, sandbox, client_secret="cs1.definitely-wrong-secret")
    with serve_api(db, settings) as client:
        r = _get(client, "/api/health/component/providers")
        assert r.status_code == 503  # the only connection is unhealthy: the component is down
        [conn] = r.json()["connections"]
        assert conn["health"] == "unhealthy" and conn["error_code"] and conn["error"]
        overall = _get(client, "/api/health")
        assert overall.status_code == 200  # providers are not required by default
        for text_ in (r.text, overall.text):
            assert "definitely-wrong-secret" not in text_ and "ak1.test" not in text_ and "cid.t" not in text_
    with db.connect() as c:
        health, error = c.execute(text("SELECT health, last_error FROM provider_connections")).one()
    assert health == "unhealthy" and "definitely-wrong-secret" not in (error or "")


def test_disabled_connections_are_not_checked(db: Engine, settings: Settings, sandbox: SandboxHandle) -> None:
    add_receiver(db, sandbox)
    with db.begin() as c:
        c.execute(text("UPDATE provider_connections SET enabled = false"))
    with serve_api(db, settings) as client:
        body = _get(client, "/api/health/component/providers").json()
    assert body["status"] == "up" and body["enabled_connections"] == 0


@pytest.mark.parametrize("component", ["db", "providers", "dagster", "sandbox"])
def test_component_endpoints_need_no_token(api: str, component: str) -> None:
    r = httpx.get(f"{api}/api/health/component/{component}", timeout=60)
    assert r.status_code in (200, 503)
    assert r.json()["component"] == component and "status" in r.json()
