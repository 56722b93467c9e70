"""End to end with the real daemon: POST /api/jobs/ → synced at the sandbox with no manual step; then the
sandbox completes the job and the scheduled pull writes `completed` + revenue back to the routing and the job."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from integration_core.local.seed import demo_company_id, demo_technician_id
from integration_core.local.stack import LAUNCHER_READY, LocalStack
from tests.support.config import TEST_API_TOKEN, TEST_SECRET_KEY
from tests.support.db import psycopg_url
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture()
def stack(
    request: pytest.FixtureRequest, db, database_url: str, dagster_database_url: str, tmp_path: Path
) -> Iterator[LocalStack]:
    """The whole local stack; `@pytest.mark.parametrize("stack", [...], indirect=True)` picks the run launcher
    (DAGSTER_RUN_LAUNCHER: `warmfork`, the default, or Dagster's stock `default`)."""
    env = {
        "DAGSTER_RUN_LAUNCHER": getattr(request, "param", "warmfork"),
        "DATABASE_URL": database_url,
        "DAGSTER_DATABASE_URL": dagster_database_url,
        "API_TOKEN": TEST_API_TOKEN,
        "SECRET_KEY": TEST_SECRET_KEY,
        "SANDBOX_OFFICE_ENABLED": "false",  # the test plays the office itself
        "PULL_UPDATES_CRON": "* * * * *",
        "SENSOR_INTERVAL_SECONDS": "2",
        "RUN_IDLE_SECONDS": "120",  # the tests look a delivery run up while it lingers, however slow the machine
    }
    s = LocalStack(tmp_path / "stack", env)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _refer_water_heater_job(api: httpx.Client, key: str) -> dict:  # type: ignore[type-arg]
    """A referral that matches Sunset Plumbing (sandbox tenant 1001, booking mode); returns the created job."""
    body = {
        "summary": "Water heater leaking in the garage",
        "address": {"street": "1 Canyon Dr", "city": "Beverly Hills", "state": "CA", "zip_code": "90210"},
        "homeowner": {"name": "Pat Doe", "phone": "310-555-0199"},
        "created_by_company_id": str(demo_company_id("handy-neighbors")),
        "created_by_technician_id": str(demo_technician_id("handy-neighbors")),
        "required_skills": ["water_heater"],
    }
    created = api.post("/api/jobs/", json=body, headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
    assert created.json()["routings"][0]["receiving_company_id"] == str(demo_company_id("sunset-plumbing"))
    job: dict = created.json()  # type: ignore[type-arg]
    return job


def test_referral_is_delivered_and_followed_to_revenue(stack: LocalStack) -> None:
    # the stack said it was up only once the run launcher had imported the code location: the first run starts
    # at once instead of queueing behind that import
    assert LAUNCHER_READY in (stack.data_dir / "logs" / "dagster-daemon.log").read_text()
    api = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}, timeout=30)
    sandbox = httpx.Client(base_url=stack.sandbox_url, timeout=30)
    created = _refer_water_heater_job(api, "e2e-1")
    job_id, routing_id = created["id"], created["routings"][0]["id"]

    def synced() -> Any:
        r = api.get(f"/api/routings/{routing_id}").json()
        return r if r["status"] == "synced" else None

    routing = wait_for(synced, 90, "the routing to be synced by the sensor-launched run")
    tenant = "1001"  # Sunset Plumbing's sandbox tenant, booking mode
    info = sandbox.get(f"/_sandbox/tenants/{tenant}/inspect").json()
    assert info["markers"]["bookings"] == {routing_id: 1}

    base = f"/_sandbox/tenants/{tenant}"
    converted = sandbox.post(f"{base}/bookings/{routing['external_id']}/advance", json={"status": "Converted"})
    st_job = converted.json()["job"]["id"]
    for status in ("Dispatched", "InProgress"):
        sandbox.post(f"{base}/jobs/{st_job}/advance", json={"status": status}).raise_for_status()
    sandbox.post(f"{base}/jobs/{st_job}/advance", json={"status": "Completed", "invoice_total": 725}).raise_for_status()

    def completed() -> Any:
        r = api.get(f"/api/routings/{routing_id}").json()
        return r if r["external_status"] == "completed" else None

    routing = wait_for(completed, 150, "the scheduled status pull to write completion back")
    assert Decimal(routing["revenue"]) == Decimal("725.00") and routing["completed_at"]
    job = api.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["completed_at"]


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _launch_seconds(dagster_database_url: str, run_id: str) -> float:
    """From the run's STARTING event (the launcher was called) to its START event (the worker executes)."""
    with psycopg.connect(psycopg_url(dagster_database_url)) as conn:
        rows: dict[str, Any] = dict(
            conn.execute(
                "SELECT dagster_event_type, timestamp FROM event_logs WHERE run_id = %s"
                " AND dagster_event_type IN ('PIPELINE_STARTING', 'PIPELINE_START')",
                (run_id,),
            ).fetchall()
        )
    return float((rows["PIPELINE_START"] - rows["PIPELINE_STARTING"]).total_seconds())


@pytest.mark.parametrize("stack", ["warmfork", "default"], indirect=True)
def test_a_sensor_launched_run_delivers_and_stopping_the_stack_cancels_it(
    stack: LocalStack, dagster_database_url: str
) -> None:
    """With either run launcher, a referral is delivered by a run the sensor launched (nothing depends on the
    WarmForkRunLauncher: docs/scaling.md). `warmfork` starts each run worker as a fork of the daemon's
    forkserver and records it on the run; `default` (Dagster's stock DefaultRunLauncher) has the code server
    spawn it. Stopping the stack while the run lingers for work ends that run CANCELED, not failed, and leaves
    no run worker behind."""
    from integration_core.operations.dagster_client import DagsterClient
    from pipelines.launcher import HOST_TAG, PID_TAG

    launcher = stack.env["DAGSTER_RUN_LAUNCHER"]
    api = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}, timeout=30)
    routing_id = _refer_water_heater_job(api, f"e2e-launcher-{launcher}")["routings"][0]["id"]
    wait_for(
        lambda: api.get(f"/api/routings/{routing_id}").json()["status"] == "synced",
        90,
        "the routing to be synced by the sensor-launched run",
    )
    markers = httpx.get(f"{stack.sandbox_url}/_sandbox/tenants/1001/inspect").json()["markers"]["bookings"]
    assert markers == {routing_id: 1}
    dagster = DagsterClient(stack.dagster_url, timeout=10)
    (run,) = [r for r in dagster.runs(("STARTED",)) if r.job_name == "deliver_routings"]
    if launcher == "warmfork":
        assert run.tags[HOST_TAG] and run.tags[PID_TAG]
        workers = {int(run.tags[PID_TAG])}
        (worker,) = workers
        forkserver = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert "forkserver" in Path(f"/proc/{forkserver}/cmdline").read_text(), "run worker is not a forkserver child"
    else:
        instance = (stack.data_dir / "dagster_home" / "dagster.yaml").read_text()
        assert "class: DefaultRunLauncher" in instance and "WarmFork" not in instance
        with psycopg.connect(psycopg_url(dagster_database_url)) as conn:
            tags = {k for (k,) in conn.execute("SELECT key FROM run_tags WHERE run_id = %s", (run.run_id,))}
        assert PID_TAG not in tags and ".dagster/grpc_info" in tags, "not launched by the DefaultRunLauncher"
        state = json.loads((stack.data_dir / "run" / "stack.json").read_text())
        [code_server] = [int(p["pid"]) for p in state["processes"] if p["name"] == "dagster-code"]
        workers = {
            pid
            for pid in _descendants(code_server)
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        }
        assert workers, "no run worker spawned under the code server"
    print(f"\n[{launcher}] run launch (STARTING -> START): {_launch_seconds(dagster_database_url, run.run_id):.2f} s")

    stack.stop()  # the run still lingers for new work (RUN_IDLE_SECONDS)

    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "a run worker outlived the stack"
    with psycopg.connect(psycopg_url(dagster_database_url)) as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_id = %s", (run.run_id,)).fetchone()
    assert status == ("CANCELED",)


def test_a_killed_run_worker_is_failed_by_run_monitoring_and_retried(stack: LocalStack) -> None:
    """SIGKILL a run worker (OOM, a kill -9): run monitoring asks the launcher, which finds the process gone, so
    the run is failed rather than left STARTED forever; the crash-only retry policy relaunches it, and delivery
    goes on — the next referral is synced, and nothing was delivered twice."""
    from integration_core.operations.dagster_client import DagsterClient
    from pipelines.launcher import PID_TAG

    api = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}, timeout=30)
    first = _refer_water_heater_job(api, "e2e-crash-1")["routings"][0]["id"]
    wait_for(lambda: api.get(f"/api/routings/{first}").json()["status"] == "synced", 90, "the first delivery")

    dagster = DagsterClient(stack.dagster_url, timeout=10)
    (run,) = [r for r in dagster.runs(("STARTED",)) if r.job_name == "deliver_routings"]
    os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)

    wait_for(
        lambda: any(r.run_id == run.run_id for r in dagster.runs(("FAILURE",))),
        90,
        "run monitoring to fail the run whose worker died",
    )

    def retry() -> bool:
        every = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "SUCCESS", "FAILURE", "CANCELING", "CANCELED")
        return any(r.tags.get("dagster/parent_run_id") == run.run_id for r in dagster.runs(every))

    wait_for(retry, 60, "the crash-only retry to relaunch the run")
    second = _refer_water_heater_job(api, "e2e-crash-2")["routings"][0]["id"]
    wait_for(lambda: api.get(f"/api/routings/{second}").json()["status"] == "synced", 90, "delivery after the crash")
    markers = httpx.get(f"{stack.sandbox_url}/_sandbox/tenants/1001/inspect").json()["markers"]["bookings"]
    assert markers == {first: 1, second: 1}
