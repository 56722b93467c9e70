"""`si` operator commands (typer's CliRunner, in-process, on the test database) and their exit codes:
0 ok · 1 the operation failed · 2 usage · 3 a dependency is unavailable · 4 not found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner, Result

from integration_core.cli import app
from integration_core.settings import get_settings
from tests.support.config import DEAD_URL, TEST_API_TOKEN, TEST_SECRET_KEY
from tests.support.dagster import DagsterHandle
from tests.support.operator import SECRETS, receiver, routing_status, set_status
from tests.support.sandbox import SandboxHandle
from tests.support.world import World, add_receiver, add_routings

ROOT = Path(__file__).resolve().parents[2]


def _clear_caches() -> None:
    from integration_core.db import engine as engine_mod

    get_settings.cache_clear()
    engine_mod.database_url.cache_clear()


class Si:
    """Runs `si` in-process; `**env` overrides environment variables for the rest of the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runner = CliRunner()
        self.monkeypatch = monkeypatch

    def env(self, **env: str) -> None:
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        _clear_caches()

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        if env:
            self.env(**env)
        return self.runner.invoke(app, list(args), input=input, catch_exceptions=False)


@pytest.fixture()
def si(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Si]:
    """`si` with the test database and secrets, Dagster and the sandbox unreachable unless a test says so."""
    for name in (
        "SERVICETITAN_CLIENT_ID",
        "SERVICETITAN_CLIENT_SECRET",
        "SERVICETITAN_APP_KEY",
        "SERVICETITAN_TENANT_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    runner = Si(monkeypatch)
    runner.env(
        DATABASE_URL=database_url,
        SECRET_KEY=TEST_SECRET_KEY,
        API_TOKEN=TEST_API_TOKEN,
        ENVIRONMENT="test",
        DAGSTER_WEBSERVER_URL=DEAD_URL,
        SERVICETITAN_SANDBOX_URL=DEAD_URL,
        COLUMNS="250",
    )
    yield runner
    monkeypatch.undo()
    _clear_caches()


# --- health / status ----------------------------------------------------------------------------------------


def test_health_exit_codes(db: Engine, si: Si) -> None:
    r = si("health")
    assert r.exit_code == 0, r.output  # the database (required) is up; Dagster and the sandbox are not required
    assert "db" in r.output and "up" in r.output and "dagster unavailable" in r.output
    data = json.loads(si("health", "--json").stdout)
    assert data["components"]["db"]["status"] == "up" and data["status"] == "degraded"

    si.env(HEALTH_REQUIRED_COMPONENTS="db,dagster")
    assert si("health").exit_code == 3
    assert si("health", "dagster").exit_code == 3
    assert si("health", "db").exit_code == 0
    assert si("health", "redis").exit_code == 2


def test_health_with_a_running_dagster(db: Engine, si: Si, dagster_web: DagsterHandle) -> None:
    dagster_web.heartbeat()
    dagster_web.queue_run("c1")
    r = si("health", "dagster", DAGSTER_WEBSERVER_URL=dagster_web.url)
    assert r.exit_code == 0, r.output
    assert "runs queued 1" in r.output and "SENSOR=ok" in r.output


def test_health_database_down(db: Engine, si: Si) -> None:
    r = si("health", DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    assert r.exit_code == 3 and "database unreachable" in r.output


def test_status(db: Engine, world: World, si: Si, dagster_web: DagsterHandle) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    ids = add_routings(db, world, a, 3)
    set_status(db, ids[:1], "failed")
    r = si("status")
    assert r.exit_code == 0, r.output
    assert "Alpha Plumbing" in r.output and "Dagster runs: unknown" in r.output
    dagster_web.queue_run(str(a))
    r = si("status", DAGSTER_WEBSERVER_URL=dagster_web.url)
    assert "Dagster runs: 1 queued, 0 in progress" in r.output
    data = json.loads(si("status", "--json").stdout)
    assert data["by_status"]["pending"] == 2 and data["by_status"]["failed"] == 1
    assert si("status", "--company", "nope").exit_code == 2


def test_status_shows_connections_and_warns_over_budget(db: Engine, si: Si) -> None:
    r = si("status")
    assert "PostgreSQL connections:" in r.output and "of max_connections =" in r.output
    assert "warning" not in r.output
    r = si("status", DAGSTER_MAX_CONCURRENT_RUNS="1000", RUN_DB_POOL_SIZE="8")
    assert r.exit_code == 0 and "connection budget: the service may open up to" in " ".join(r.output.split())


def test_database_unavailable_is_exit_3(db: Engine, si: Si) -> None:
    r = si("status", DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    assert r.exit_code == 3 and "database unavailable" in r.output


# --- routings -----------------------------------------------------------------------------------------------


def test_routings_list_and_show(db: Engine, world: World, si: Si) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    failed, pending = add_routings(db, world, a, 2)
    set_status(db, [failed], "failed", error_code="validation_error")
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sync_attempts (routing_id, run_id, attempt_no, finished_at, outcome, http_status, "
                "error_code, error_message, duration_ms) VALUES (:r, 'run-7', 1, now(), 'failed', 400, "
                "'validation_error', 'Summary is required', 120)"
            ),
            {"r": failed},
        )

    r = si("routings", "list", "--status", "failed")
    assert r.exit_code == 0, r.output
    assert str(failed) in r.output and str(pending) not in r.output and "validation_error" in r.output
    assert str(pending) in si("routings", "list", "--company", str(a)).output
    rows = json.loads(si("routings", "list", "--error-code", "validation_error", "--json").stdout)
    assert [x["id"] for x in rows] == [str(failed)]
    assert si("routings", "list", "--status", "bogus").exit_code == 2
    assert si("routings", "list", "--limit", "0").exit_code == 2

    shown = si("routings", "show", str(failed))
    assert shown.exit_code == 0, shown.output
    assert "run-7" in shown.output and "Summary is required" in shown.output and "Alpha Plumbing" in shown.output
    detail = json.loads(si("routings", "show", str(failed), "--json").stdout)
    assert detail["attempts_log"][0]["http_status"] == 400
    assert si("routings", "show", str(uuid.uuid4())).exit_code == 4
    assert si("routings", "show", "not-a-uuid").exit_code == 2


def test_routings_retry(db: Engine, world: World, si: Si) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    b = receiver(db, "Beta Electric", tenant_id="502")
    ra = add_routings(db, world, a, 3)
    rb = add_routings(db, world, b, 1)
    set_status(db, ra, "failed", error_code="validation_error")
    set_status(db, rb, "failed", error_code="misconfigured")

    assert si("routings", "retry").exit_code == 2  # no filter
    declined = si("routings", "retry", "--company", str(a), input="n\n")
    assert declined.exit_code == 1 and routing_status(db, ra[0]) == "failed"

    one = si("routings", "retry", str(ra[0]), "--yes")
    assert one.exit_code == 0 and "retried 1" in one.output and routing_status(db, ra[0]) == "pending"
    again = si("routings", "retry", str(ra[0]), "--yes")
    assert again.exit_code == 1 and "only failed routings" in again.output
    assert si("routings", "retry", str(uuid.uuid4()), "--yes").exit_code == 4

    r = si("routings", "retry", "--error-code", "misconfigured", "--yes")
    assert r.exit_code == 0 and "retried 1" in r.output and routing_status(db, rb[0]) == "pending"
    r = si("routings", "retry", "--company", str(a), "--reason", "fixed mapping", "-y")
    assert "retried 2" in r.output and routing_status(db, ra[2]) == "pending"
    assert "nothing to retry" in si("routings", "retry", "--company", str(a), "-y").output


def test_bulk_retry_shows_progress_in_chunks(db: Engine, world: World, si: Si) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    ids = add_routings(db, world, a, 1200)
    set_status(db, ids, "failed", error_code="timeout")
    r = si("routings", "retry", "--error-code", "timeout", "--yes")
    assert r.exit_code == 0, r.output
    assert "retrying" in r.output and "retried 1200" in r.output
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_routings WHERE status = 'pending'")).scalar() == 1200
        # one audit row per chunk of 500
        assert conn.execute(text("SELECT count(*) FROM audit_log WHERE action = 'routings.retried'")).scalar() == 3


def test_dry_run(db: Engine, world: World, si: Si) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    [routing] = add_routings(db, world, a, 1)
    r = si("dry-run", str(routing))
    assert r.exit_code == 0, r.output
    assert "would send yes" in r.output and "create_booking" in r.output and "nothing was sent" in r.output
    data = json.loads(si("dry-run", str(routing), "--json").stdout)
    assert data["requests"][0]["body"]["externalId"] == str(routing) and data["sent"] == 0
    assert not any(s in r.output for s in SECRETS)
    assert si("dry-run", str(uuid.uuid4())).exit_code == 4


# --- connections --------------------------------------------------------------------------------------------


def test_connections_add_from_environment_test_disable_enable(
    db: Engine, world: World, si: Si, sandbox: SandboxHandle
) -> None:
    company = receiver(db, "Gamma Roofing")
    waiting = add_routings(db, world, company, 2)
    set_status(db, waiting, "no_integration")
    t = sandbox.create_tenant(tenant_id=str(860000 + uuid.uuid4().int % 10_000))
    si.env(
        SERVICETITAN_CLIENT_ID=t.client_id,
        SERVICETITAN_CLIENT_SECRET=t.client_secret,
        SERVICETITAN_APP_KEY=t.app_key,
    )

    r = si(
        "connections", "add", str(company), "--tenant-id", t.tenant_id, "--base-url", sandbox.url,
        "--booking-provider-id", str(t.booking_provider_id),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"servicetitan {t.tenant_id}" in r.output and "enabled" in r.output
    assert t.client_secret not in r.output and t.app_key not in r.output and t.client_id not in r.output
    assert routing_status(db, waiting[0]) == "pending"  # enabling released the waiting routings

    ok = si("connections", "test", str(company))
    assert ok.exit_code == 0 and "healthy" in ok.output, ok.output

    off = si("connections", "disable", str(company))
    assert off.exit_code == 0 and "2 routing(s) moved pending → no_integration" in off.output
    on = si("connections", "enable", str(company))
    assert "2 routing(s) moved no_integration → pending" in on.output

    listed = si("connections", "list")
    assert "Gamma Roofing" in listed.output and t.client_secret not in listed.output
    assert si("connections", "test", str(uuid.uuid4())).exit_code == 4
    assert si("connections", "disable", str(uuid.uuid4())).exit_code == 4


def test_connections_add_prompts_for_secrets_with_hidden_input(db: Engine, si: Si) -> None:
    company = receiver(db, "Gamma Roofing")
    r = si(
        "connections", "add", str(company), "--tenant-id", "777", "--booking-provider-id", "9",
        input="cid.prompted-id-1\ncs1.prompted-secret-2\nak1.prompted-key-3\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "client id:" in r.output and "client secret:" in r.output and "app key:" in r.output
    for value in ("prompted-secret-2", "prompted-key-3", "cid.prompted-id-1"):
        assert value not in r.output  # hidden input is not echoed, and nothing prints it back
    with db.connect() as conn:
        assert conn.execute(text("SELECT account_id FROM provider_connections")).scalar() == "777"


def test_connections_add_usage_errors(db: Engine, si: Si) -> None:
    company = receiver(db, "Gamma Roofing")
    env = {"SERVICETITAN_CLIENT_ID": "cid.x", "SERVICETITAN_CLIENT_SECRET": "cs1.y", "SERVICETITAN_APP_KEY": "ak1.z"}
    r = si("connections", "add", str(company), "--tenant-id", "777", **env)  # booking mode, no provider id
    assert r.exit_code == 2 and "booking_provider_id" in r.output and "cs1.y" not in r.output
    assert si("connections", "add", str(company), "--booking-provider-id", "1").exit_code == 2  # no tenant
    r = si("connections", "add", str(uuid.uuid4()), "--tenant-id", "777", "--booking-provider-id", "1")
    assert r.exit_code == 4


def test_connections_test_failure_exit_codes(db: Engine, si: Si, sandbox: SandboxHandle) -> None:
    wrong, _ = add_receiver(db, sandbox, client_secret="cs1.wrong-secret")
    r = si("connections", "test", str(wrong))
    assert r.exit_code == 1 and "unhealthy" in r.output and "wrong-secret" not in r.output
    unreachable = receiver(db, "Nowhere Co", tenant_id="778", base_url=DEAD_URL)
    r = si("connections", "test", str(unreachable))
    assert r.exit_code == 3, r.output


# --- companies, rate limits, the run queue ------------------------------------------------------------------


def test_companies_list(demo, si: Si) -> None:
    r = si("companies", "list")
    assert r.exit_code == 0, r.output
    assert "Sunset Plumbing" in r.output and "servicetitan 1001" in r.output and "none" in r.output
    data = json.loads(si("companies", "list", "--json").stdout)
    assert any(c["provider"]["configured"] for c in data) and all("skills" in c for c in data)
    assert si("companies", "list", "--active", "bogus").exit_code == 2
    some = data[0]["id"]
    assert json.loads(si("companies", "show", some).stdout)["id"] == some
    assert si("companies", "show", str(uuid.uuid4())).exit_code == 4


def test_rate_limits(db: Engine, si: Si) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO provider_rate_limits (provider, account_id, rate, burst, current_rate, backoff_until) "
                "VALUES ('servicetitan', '1001', 55.2, 4, 55.2, now() + interval '20 seconds')"
            )
        )
    r = si("rate-limits")
    assert r.exit_code == 0 and "1001" in r.output and "55.2" in r.output
    [row] = json.loads(si("rate-limits", "--json").stdout)
    assert row["tokens_available"] == 0 and row["backoff_seconds_left"] > 15


def test_queue_list_and_clear(db: Engine, si: Si, dagster_web: DagsterHandle) -> None:
    a = dagster_web.queue_run("company-a")
    listed = si("queue", "list", DAGSTER_WEBSERVER_URL=dagster_web.url)
    assert listed.exit_code == 0 and a in listed.output and "company-a" in listed.output
    assert si("queue", "clear", input="n\n").exit_code == 1 and dagster_web.run_status(a) == "QUEUED"
    cleared = si("queue", "clear", "--yes")
    assert cleared.exit_code == 0 and f"cancelled {a}" in cleared.output
    assert dagster_web.run_status(a) == "CANCELED"


def test_queue_commands_when_dagster_is_down(db: Engine, si: Si) -> None:
    r = si("queue", "list")
    assert r.exit_code == 3 and "dagster unavailable" in r.output
    assert si("queue", "clear", "--yes").exit_code == 3


# --- the console script itself ------------------------------------------------------------------------------


def test_si_console_script_runs_health(database_url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "ENVIRONMENT": "test",
        "DAGSTER_WEBSERVER_URL": DEAD_URL,
        "SERVICETITAN_SANDBOX_URL": DEAD_URL,
    }
    si_bin = Path(sys.executable).parent / "si"
    r = subprocess.run(
        [str(si_bin), "health", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["components"]["db"]["status"] == "up"


def test_db_backup_and_restore_round_trip(db: Engine, world: World, si: Si, tmp_path: Path) -> None:
    """`make db-backup` / `make db-restore` (the guide's Database Recovery): the client tools match the server's
    major version, so a dump restores on the server it came from whatever clients are installed."""
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    [routing] = add_routings(db, world, a, 1)
    dump = tmp_path / "backup.dump"
    backup = si("db", "backup", "--output", str(dump))
    assert backup.exit_code == 0, backup.output
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET status = 'failed', last_error_code = 'x'"))
    restored = si("db", "restore", str(dump), "--yes")
    assert restored.exit_code == 0, restored.output
    assert routing_status(db, routing) == "pending"  # as it was when backed up
