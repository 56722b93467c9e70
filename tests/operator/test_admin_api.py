"""The admin API over real HTTP: queue stats, clearing Dagster's queue, providers, rate limits, companies."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from sqlalchemy import Engine, text

from integration_core.delivery.ratelimit import PostgresRateLimiter
from integration_core.settings import Settings
from tests.support.api import serve_api
from tests.support.config import DEAD_URL, with_settings
from tests.support.dagster import DagsterHandle
from tests.support.delivery import run
from tests.support.operator import SECRETS, audit_rows, receiver, set_status
from tests.support.world import World, add_routings

ADMIN_GETS = [
    "/api/admin/queue-stats",
    "/api/admin/providers",
    "/api/admin/rate-limits",
    "/api/admin/companies",
    f"/api/admin/companies/{uuid.uuid4()}",
    f"/api/admin/companies/{uuid.uuid4()}/technicians",
    f"/api/admin/companies/{uuid.uuid4()}/connection",
]
ADMIN_POSTS = [
    "/api/admin/clear-queues",
    "/api/admin/companies",
    f"/api/admin/companies/{uuid.uuid4()}/disable",
    f"/api/admin/companies/{uuid.uuid4()}/connection/test",
    "/api/routings/retry",
    f"/api/routings/{uuid.uuid4()}/retry",
    f"/api/routings/{uuid.uuid4()}/dry-run",
]


@pytest.mark.parametrize("path", ADMIN_GETS)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token"])
def test_admin_reads_need_the_token(api: str, path: str, header: str | None) -> None:
    r = httpx.get(api + path, headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_admin_writes_need_the_token(api: str, path: str) -> None:
    assert httpx.post(api + path, json={}).status_code == 401


# --- queue-stats --------------------------------------------------------------------------------------------


def test_queue_stats_counts_routings_per_company_and_dagster_runs(
    db: Engine, world: World, ops: httpx.Client, dagster_web: DagsterHandle
) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    b = receiver(db, "Beta Electric")  # no connection: its routings wait in no_integration
    ra = add_routings(db, world, a, 6)
    rb = add_routings(db, world, b, 2)
    set_status(db, ra[:2], "synced")
    set_status(db, ra[2:3], "failed")
    set_status(db, ra[3:4], "claimed")
    set_status(db, rb, "no_integration")
    with db.begin() as conn:
        conn.execute(
            text("UPDATE job_routings SET created_at = now() - interval '90 seconds' WHERE id = :id"), {"id": ra[4]}
        )
    dagster_web.queue_run(str(a))
    dagster_web.start_run(str(b))

    r = ops.get("/api/admin/queue-stats")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["by_status"] == {
        "pending": 2,
        "claimed": 1,
        "needs_reconcile": 0,
        "synced": 2,
        "failed": 1,
        "no_integration": 2,
    }
    assert body["total"] == 8
    companies = {c["company_name"]: c for c in body["companies"]}
    assert companies["Alpha Plumbing"]["by_status"]["pending"] == 2 and companies["Alpha Plumbing"]["due_now"] == 2
    assert companies["Beta Electric"]["by_status"]["no_integration"] == 2
    assert companies["Beta Electric"]["oldest_pending_age_seconds"] is None
    assert 85 <= body["oldest_pending_age_seconds"] < 600
    assert body["companies"][0]["company_name"] == "Alpha Plumbing"  # longest-waiting first
    assert body["dagster"] == {"queued": 1, "in_progress": 1} and body["dagster_unavailable_reason"] is None
    connections = body["database_connections"]  # PostgreSQL connections now against max_connections
    assert 1 <= connections["current"] <= connections["max_connections"]
    assert connections["configured_max"] == sum(x["connections"] for x in connections["lines"])

    only = ops.get("/api/admin/queue-stats", params={"company_id": str(b)}).json()
    assert [c["company_name"] for c in only["companies"]] == ["Beta Electric"]
    # the homeowner data of the jobs never appears in queue statistics
    assert "Homeowner" not in r.text and "example.com" not in r.text


def test_queue_stats_when_dagster_is_down(db: Engine, settings: Settings) -> None:
    with serve_api(db, with_settings(settings, dagster_webserver_url=DEAD_URL)) as client:
        r = client.get("/api/admin/queue-stats")
    assert r.status_code == 200
    assert r.json()["dagster"] is None and "dagster unavailable" in r.json()["dagster_unavailable_reason"]


# --- clear-queues -------------------------------------------------------------------------------------------


def test_clear_queues_cancels_queued_runs_and_leaves_routings_alone(
    db: Engine, world: World, ops: httpx.Client, dagster_web: DagsterHandle
) -> None:
    company = receiver(db, "Alpha Plumbing", tenant_id="501")
    routings = add_routings(db, world, company, 3)
    queued = [dagster_web.queue_run(str(company)), dagster_web.queue_run("other-company", tenant="502")]
    running = dagster_web.start_run("third-company")

    r = ops.post("/api/admin/clear-queues")
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(c["run_id"] for c in body["cancelled"]) == sorted(queued)
    assert {c["partition"] for c in body["cancelled"]} == {str(company), "other-company"}
    assert body["failed"] == {} and body["routings_changed"] == 0 and "Routings are unchanged" in body["message"]
    assert all(dagster_web.run_status(q) == "CANCELED" for q in queued)
    assert dagster_web.run_status(running) == "STARTED"
    with db.connect() as conn:
        assert conn.execute(text("SELECT array_agg(DISTINCT status) FROM job_routings")).scalar() == ["pending"]
        assert conn.execute(text("SELECT count(*) FROM job_routings")).scalar() == len(routings)
    [row] = [a for a in audit_rows(db) if a["action"] == "dagster.queue_cleared"]
    assert row["actor"] == "api" and sorted(row["details"]["cancelled"]) == sorted(queued)

    again = ops.post("/api/admin/clear-queues").json()
    assert again["cancelled"] == [] and "cancelled 0 queued run(s)" in again["message"]


def test_clear_queues_when_dagster_is_down_is_503_and_changes_nothing(db: Engine, settings: Settings) -> None:
    with serve_api(db, with_settings(settings, dagster_webserver_url=DEAD_URL)) as client:
        r = client.post("/api/admin/clear-queues")
    assert r.status_code == 503 and r.json()["detail"].startswith("dagster unavailable")
    assert [a for a in audit_rows(db) if a["action"] == "dagster.queue_cleared"] == []


# --- providers ----------------------------------------------------------------------------------------------


def test_providers_lists_connections_with_health_and_no_secret(db: Engine, ops: httpx.Client) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    receiver(db, "Beta Electric", tenant_id="502", mode="job", enabled=False)
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE provider_connections SET health = 'healthy', last_success_at = now(), "
                "last_failure_at = now() - interval '1 day', last_error = 'auth_failed: token rejected' "
                "WHERE company_id = :c"
            ),
            {"c": a},
        )
    r = ops.get("/api/admin/providers")
    assert r.status_code == 200
    rows = {p["company_name"]: p for p in r.json()}
    alpha, beta = rows["Alpha Plumbing"], rows["Beta Electric"]
    assert alpha["health"] == "healthy" and alpha["enabled"] is True and alpha["delivery_mode"] == "booking"
    assert alpha["last_success_at"] and alpha["last_failure_at"] and alpha["last_error"]
    assert beta["enabled"] is False and beta["delivery_mode"] == "job" and beta["account_id"] == "502"
    assert alpha["secrets_set"] == {"client_id": True, "client_secret": True, "app_key": True}
    assert alpha["provider"] == "servicetitan" and alpha["settings"]["tenant_id"] == "501"
    assert not {"client_id", "client_secret", "app_key"} & (set(alpha) | set(alpha["settings"]))
    assert not any(s in r.text for s in SECRETS)


# --- rate-limits --------------------------------------------------------------------------------------------


def test_rate_limits_show_the_limiters_state(db: Engine, world: World, ops: httpx.Client, database_url: str) -> None:
    company = receiver(db, "Alpha Plumbing", tenant_id="501")
    receiver(db, "Beta Electric", tenant_id="502")

    async def use(engine):  # the real limiter, as a delivery run drives it
        a = PostgresRateLimiter(
            engine,
            provider="servicetitan",
            account_id="501",
            budget_per_second=10,
            burst=5,
            safety_margin=0.5,  # rate 5/s; the effective burst stays 5 (budget 10 - rate 5)
            recovery_per_second=0.02,
        )
        for _ in range(3):
            await a.acquire()
        b = PostgresRateLimiter(
            engine,
            provider="servicetitan",
            account_id="502",
            budget_per_second=60,
            burst=10,
            safety_margin=0.92,
            recovery_per_second=0.02,
        )
        await b.acquire()
        await b.throttled(retry_after=30)

    run(database_url, use)
    [routing] = add_routings(db, world, company, 1)
    with db.begin() as conn:
        for age in ("5 minutes", "10 minutes", "2 hours"):
            conn.execute(
                text(
                    "INSERT INTO sync_attempts (routing_id, attempt_no, started_at, finished_at, outcome, http_status) "
                    "VALUES (:r, 1, now() - CAST(:age AS interval), now() - CAST(:age AS interval), "
                    "'rate_limited', 429)"
                ),
                {"r": routing, "age": age},
            )

    r = ops.get("/api/admin/rate-limits")
    assert r.status_code == 200, r.text
    limits = {x["account_id"]: x for x in r.json()}
    a, b = limits["501"], limits["502"]
    assert a["companies"] == ["Alpha Plumbing"] and a["rate"] == 5 and a["burst"] == 5
    assert 0 <= a["tokens_available"] < 5  # three requests just took tokens out of the bucket
    assert a["backoff_until"] is None and a["backoff_seconds_left"] == 0 and a["requests_total"] == 3
    assert a["rate_limited_last_hour"] == 2  # the one two hours ago does not count
    assert b["throttled_total"] == 1 and 25 < b["backoff_seconds_left"] <= 30
    assert b["tokens_available"] == 0  # nobody may send during a Retry-After backoff
    assert b["current_rate"] < b["rate"]  # halved after the 429, recovering
    assert b["rate_limited_last_hour"] == 0


def test_rate_limits_empty(ops: httpx.Client) -> None:
    assert ops.get("/api/admin/rate-limits").json() == []


# --- companies ----------------------------------------------------------------------------------------------


def test_companies_show_skills_area_and_provider(demo, ops: httpx.Client) -> None:
    r = ops.get("/api/admin/companies")
    assert r.status_code == 200
    page = r.json()
    by_name = {c["name"]: c for c in page["items"]}
    assert page["total"] == len(by_name) >= 6
    connected = [c for c in page["items"] if c["provider"]["configured"]]
    unconnected = [c for c in page["items"] if not c["provider"]["configured"]]
    assert connected and unconnected
    assert all(c["provider"]["enabled"] and c["provider"]["account_id"] for c in connected)
    assert all(c["provider"] == {**c["provider"], "configured": False, "enabled": False} for c in unconnected)
    some = connected[0]
    assert some["skills"] and some["service_zip_codes"] and some["technicians"] >= 1
    assert {"skill", "level", "primary"} == set(some["skills"][0])
    assert not any(s in json.dumps(page) for s in ("secret", "app_key"))
