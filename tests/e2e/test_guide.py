"""Walk the troubleshooting guide of the system we replace (shared/reference/troubleshooting-guide.md): every
`make` target and `curl` it shows, against a running stack, adapted only by the token header and real ids.
Docker-only commands map to their equivalents in docs/troubleshooting.md and are exercised there."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from integration_core.local.http_server import free_port
from integration_core.local.seed import demo_company_id, demo_technician_id
from tests.support.config import TEST_API_TOKEN, TEST_SECRET_KEY
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


class Guide:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.api = f"http://127.0.0.1:{env['API_PORT']}"
        self.headers = {"Authorization": f"Bearer {TEST_API_TOKEN}"}

    def make(
        self, *targets: str, stdin: str | None = None, check: bool = True, timeout: float = 240, **variables: str
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in variables.items())]
        done = subprocess.run(
            cmd, cwd=ROOT, env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check:
            assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def curl(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, self.api + path, headers=self.headers, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture()
def guide(db, database_url: str, dagster_database_url: str, tmp_path: Path) -> Iterator[Guide]:
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url,
        "DAGSTER_DATABASE_URL": dagster_database_url,
        "API_TOKEN": TEST_API_TOKEN,
        "SECRET_KEY": TEST_SECRET_KEY,
        "API_PORT": str(free_port()),
        "SERVICETITAN_SANDBOX_URL": f"http://127.0.0.1:{free_port()}",
        "HOUSECALLPRO_SANDBOX_URL": f"http://127.0.0.1:{free_port()}",
        "DAGSTER_WEBSERVER_PORT": str(free_port()),
        "DAGSTER_CODE_SERVER_PORT": str(free_port()),
    }
    env.pop("DAGSTER_WEBSERVER_URL", None)
    g = Guide(env)
    try:
        yield g
    finally:
        g.make("down", check=False)


def test_the_guide_works_on_this_project(guide: Guide) -> None:
    g = guide
    # -- Getting help / diagnostic commands ------------------------------------------------------------------
    assert "db-backup" in g.make("help").stdout
    g.make("db-up")
    g.make("migrate-status")
    g.make("migrate")
    up = g.make("up")
    assert "dagster-daemon" in up.stdout
    status = g.make("status")
    for name in ("api", "sandbox", "dagster-webserver", "dagster-daemon", "dagster-code"):
        assert name in status.stdout
    # right after start-up a component may still be warming up (a provider token, a daemon heartbeat)
    health = wait_for(lambda: (h := g.make("health")) and "health: healthy" in h.stdout and h, 60, "healthy")
    assert health  # (for the type checker: wait_for returns only a truthy value)
    for component in ("db", "providers", "dagster", "sandbox"):
        assert component in health.stdout

    # -- Jobs Not Being Routed: create a test job (real demo ids), list routings ----------------------------
    body = {
        "summary": "Test job",
        "address": {"street": "123 Test St", "city": "Test City", "state": "CA", "zip_code": "90210"},
        "homeowner": {"name": "Test User", "phone": "555-0000", "email": "test@example.com"},
        "created_by_company_id": str(demo_company_id("handy-neighbors")),
        "created_by_technician_id": str(demo_technician_id("handy-neighbors")),
    }
    created = g.curl("POST", "/api/jobs/", json=body)
    assert created.status_code == 201, created.text
    routing_id = created.json()["routings"][0]["id"]
    assert any(r["id"] == routing_id for r in g.curl("GET", "/api/jobs/routings").json()["items"])
    assert g.curl("GET", "/api/routings/status/pending").status_code == 200
    companies = g.curl("GET", "/api/admin/companies")
    assert companies.status_code == 200 and "Sunset Plumbing" in companies.text

    # -- Sync: the sensor delivers it; external ids are stored ----------------------------------------------
    wait_for(lambda: g.curl("GET", f"/api/routings/{routing_id}").json()["status"] == "synced", 120, "sync")
    synced = g.curl("GET", "/api/routings/status/synced").json()
    assert any(r["id"] == routing_id and r["external_id"] for r in synced["items"])

    # -- External API issues: provider configuration and health, rate limits --------------------------------
    providers = g.curl("GET", "/api/admin/providers")
    assert providers.status_code == 200 and "demo-secret" not in providers.text
    comp = g.curl("GET", "/api/health/component/providers")
    assert comp.status_code == 200, comp.text
    assert g.curl("GET", "/api/admin/rate-limits").status_code == 200
    token = httpx.post(
        g.env["SERVICETITAN_SANDBOX_URL"] + "/connect/token",
        data={"grant_type": "client_credentials", "client_id": "cid.demo1001", "client_secret": "cs1.demo-secret-1001"},
    )
    assert token.status_code == 200 and token.json()["access_token"]  # "test ServiceTitan API directly"

    # -- Queue issues: stats, clear ---------------------------------------------------------------------------
    stats = g.curl("GET", "/api/admin/queue-stats")
    assert stats.status_code == 200, stats.text
    cleared = g.curl("POST", "/api/admin/clear-queues")
    assert cleared.status_code == 200, cleared.text

    # -- Task failures: failed routings and retry -----------------------------------------------------------
    failed = g.curl("GET", "/api/routings/status/failed")
    assert failed.status_code == 200
    not_failed = g.curl("POST", f"/api/routings/{routing_id}/retry")
    assert not_failed.status_code == 409  # only failed routings are retried; this one is synced

    # -- Logs ------------------------------------------------------------------------------------------------
    assert g.make("logs").stdout.strip()
    assert "Application startup complete" in g.make("logs-api").stdout
    assert g.make("logs-worker").stdout.strip()
    assert "SensorDaemon" in g.make("logs-scheduler").stdout

    # -- Database: shell, constraints, backup, reset (asks first), restore -----------------------------------
    shell = g.make("db-shell", stdin="SELECT 1;\n\\d jobs\n")
    assert "(1 row)" in shell.stdout and "job_routings" in shell.stdout  # \d jobs: referenced by routings
    constraints = g.make("db-shell", stdin="SELECT conname FROM pg_constraint WHERE conrelid = 'jobs'::regclass;\n")
    assert "uq_jobs_created_by_company_id_idempotency_key" in constraints.stdout
    g.make("db-backup")
    backups = sorted((Path(g.env["DATA_DIR"]) / "backups").glob("*.dump"))
    assert backups
    refused = g.make("db-reset", stdin="n\n", check=False)
    assert refused.returncode != 0
    assert g.curl("GET", f"/api/routings/{routing_id}").status_code == 200  # nothing lost
    g.make("down")  # restore into a quiet database (no API or Dagster holding connections)
    g.make("db-restore", f"FILE={backups[-1]}", stdin="y\n")
    g.make("up")
    assert g.curl("GET", f"/api/routings/{routing_id}").json()["status"] == "synced"
    assert "development" in g.make("shell", stdin="print(settings.environment)\n").stdout

    # -- Configuration: restart picks up the environment -----------------------------------------------------
    g.make("restart")
    assert g.curl("GET", "/api/health").status_code == 200

    # -- Celery's worker/scheduler containers: the compose services (needs Docker; shown, not run here) -----
    dry = g.make("-n", "worker-docker")
    assert "docker compose up -d user-code dagster-daemon" in dry.stdout
    g.make("down")
    assert "no stack is running" in g.make("status", check=False).stdout
