"""Burst scenarios: a burst of referrals through the whole stack, without and with faults.

Run one alone (prints its result as JSON; exit 0 when its targets are met, 1 otherwise):

    .venv/bin/python -m bench.burst burst
    .venv/bin/python -m bench.burst burst_chaos
    .venv/bin/python -m bench.burst burst --referrals 100 --companies 10 --wait 120   # a smaller one

Both start the whole service (`integration_core.local.stack.LocalStack`: sandbox, API, Dagster webserver + daemon + code
server) on the database a user would use: the PostgreSQL server answering on 127.0.0.1:5432 (`--server`), else
the embedded server in the stack's data directory, as `e2e` does. Each scenario gets a fresh application database
and a fresh Dagster database on that server (DATABASE_URL / DAGSTER_DATABASE_URL), dropped at the end (kept with
BENCH_KEEP_DATABASES=1, to look at the routings, attempts and runs afterwards); the stack's data directory (logs
under `<data_dir>/logs/`) is kept and named in the result. `phases` splits post -> synced per routing into waiting
for a run to send it (job created -> its first delivery attempt) and sending (first attempt -> synced).

- `burst`: `--referrals` (500) posted through the API as fast as it takes them (`--concurrency` client threads,
  8) over `--companies` (50) receiving companies, each on its own sandbox tenant with a budget of 5 requests/s
  (sandbox rate limit and connection `rate_limit_per_second` alike), half in booking mode and half in job mode;
  no faults. Targets: 0 failed `deliver_routings` runs, 0 duplicates (records per routing marker in the
  sandbox), 0 lost (routings not synced when the wait ends, plus referrals the API never took), peak client
  connections of the whole server (sampled from `pg_stat_activity` every 150 ms, the sampler's own excluded)
  <= 80 % of its `max_connections`, post -> synced (routing.synced_at - job.created_at) p50 <= 15 s and
  p95 <= 45 s. The server-wide peak counts every client of the server, also other users of a shared one:
  `peak_connections_by_db` (at the peak) and `peak_connections_stack_dbs` (the scenario's two databases) tell
  the stack's share.
- `burst_chaos`: the same burst with every tenant injecting 5 % 5xx, 3 % commit-then-drop and 3 % held requests
  (3 s, committed), two delivery run workers SIGKILLed mid-batch (each one that holds claimed routings), and one
  restart of the PostgreSQL server. Targets: 0 duplicates, 0 lost, and for each kill the time from the kill
  until every routing its run held is synced <= 60 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from bench.__main__ import SECRET, TOKEN, _fresh_database, percentile

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
ZIP_CODE = "73301"
TENANT_BASE = 8101
TERMINAL = ("synced", "failed", "no_integration")
PID_TAG = "si/run_worker_pid"  # pipelines.launcher.PID_TAG / HOST_TAG (not imported: that pulls in Dagster)
HOST_TAG = "si/run_worker_host"
# routings a run holds: started (`claimed`), or leased and not written yet (a claim writes only the lease)
HELD = (
    "lease_owner IS NOT NULL AND (status = 'claimed' "
    "OR (status IN ('pending', 'needs_reconcile') AND lease_expires_at > now()))"
)
HELD_BY_RUN = (
    "SELECT id, receiving_company_id, extract(epoch FROM lease_expires_at) FROM job_routings "  # noqa: S608 - constant
    "WHERE lease_owner = %s AND " + HELD
)

CHAOS_FAULTS: dict[str, Any] = {
    "applies_to": "writes",
    "error_rate": 0.05,
    "commit_then_fail_rate": 0.03,
    "commit_then_fail_mode": "drop",
    "timeout_rate": 0.03,
    "timeout_s": 3.0,
    "timeout_commits": True,
}


# --------------------------------------------------------------------------------------------------------------
# the server: local PostgreSQL on 127.0.0.1:5432, else the embedded one
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Server:
    kind: str  # "local" | "embedded"
    admin_sqlalchemy: str  # postgresql+psycopg://…/postgres
    restart: Callable[[], None] | None
    restart_how: str

    def libpq(self, database: str) -> str:
        return make_url(self.admin_sqlalchemy).set(drivername="postgresql", database=database).render_as_string(False)

    def sqlalchemy(self, database: str) -> str:
        return make_url(self.admin_sqlalchemy).set(database=database).render_as_string(False)


def _local_cluster(port: int) -> str | None:
    """`<version> <cluster>` of the Debian cluster listening on `port` (for pg_ctlcluster), if any."""
    lsclusters = shutil.which("pg_lsclusters")
    if lsclusters is None:
        return None
    out = subprocess.run([lsclusters, "--no-header"], capture_output=True, text=True, check=False).stdout  # noqa: S603
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == str(port):
            return f"{parts[0]} {parts[1]}"
    return None


def _accepting(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _server(server_url: str, data_dir: Path) -> _Server:
    """The server at `server_url` if it answers (restartable when it is a local Debian cluster), else the
    embedded one in `data_dir` (`server_url` "embedded" asks for it)."""
    try:
        if server_url == "embedded":
            raise psycopg.OperationalError("embedded asked for")
        with psycopg.connect(server_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        url = make_url(server_url)
        admin = url.set(drivername="postgresql+psycopg", database="postgres").render_as_string(False)
        cluster = _local_cluster(url.port or 5432) if url.host in ("127.0.0.1", "localhost") else None
        ctl = shutil.which("pg_ctlcluster")
        if cluster is None or ctl is None:
            return _Server("local", admin, None, "no local cluster found to restart")
        version, name = cluster.split()

        def ctl_run(action: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(  # noqa: S603
                [ctl, "--skip-systemctl-redirect", version, name, action], capture_output=True, text=True, check=False
            )

        def restart_local() -> None:
            """`pg_ctlcluster restart`. When it fails (pg_ctl stops waiting for the shutdown after 60 s and then
            does not start the server), start the cluster again as soon as it has stopped: a benchmark must never
            leave a shared server down. The failure is still reported (RuntimeError)."""
            done = ctl_run("restart")
            if done.returncode == 0:
                return
            failed_at = time.monotonic()
            while time.monotonic() - failed_at < 180 and not _accepting(server_url):
                ctl_run("start")
                time.sleep(1)
            raise RuntimeError(
                f"pg_ctlcluster restart exited {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}; "
                f"the cluster was started again {time.monotonic() - failed_at:.0f} s later "
                f"({'accepting' if _accepting(server_url) else 'NOT accepting'} connections)"
            )

        return _Server("local", admin, restart_local, f"pg_ctlcluster --skip-systemctl-redirect {version} {name}")
    except psycopg.OperationalError:
        pass
    from integration_core.db import embedded

    socket_dir = embedded.ensure_server(data_dir)

    def restart_embedded() -> None:
        embedded.stop_server(data_dir)
        embedded.ensure_server(data_dir)

    return _Server(
        "embedded", f"postgresql+psycopg://postgres:@/postgres?host={socket_dir}", restart_embedded, "embedded"
    )


def _create_empty_database(server: _Server, name: str) -> None:
    with psycopg.connect(server.libpq("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_databases(server: _Server, names: list[str]) -> None:
    for _ in range(5):  # the server may still be coming back from a restart
        try:
            with psycopg.connect(server.libpq("postgres"), autocommit=True, connect_timeout=5) as conn:
                for name in names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.OperationalError:
            time.sleep(2)


# --------------------------------------------------------------------------------------------------------------
# samplers and the chaos controller
# --------------------------------------------------------------------------------------------------------------


class _ConnectionSampler(threading.Thread):
    """Client connections of the whole server (every database; its own excluded), every `interval` seconds."""

    _SQL = (
        "SELECT count(*) FILTER (WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()), "
        "count(*) FILTER (WHERE pid <> pg_backend_pid()), "
        "count(*) FILTER (WHERE datname = %(app)s), count(*) FILTER (WHERE datname = %(dag)s) "
        "FROM pg_stat_activity"
    )

    def __init__(self, server: _Server, app_db: str, dagster_db: str, interval: float = 0.15) -> None:
        super().__init__(name="burst-connection-sampler", daemon=True)
        self.server, self.app_db, self.dagster_db, self.interval = server, app_db, dagster_db, interval
        self.stop = threading.Event()
        self.samples = 0
        self.errors = 0
        self.peak_client = 0
        self.peak_all = 0
        self.peak_stack = 0  # connections to the scenario's own two databases
        self.peak_detail: dict[str, int] = {}
        self.peak_at: float | None = None
        self.max_connections: int | None = None
        self.started_at = time.monotonic()

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.server.libpq("postgres"), autocommit=True, connect_timeout=2)
                    if self.max_connections is None:
                        row = conn.execute("SHOW max_connections").fetchone()
                        self.max_connections = int(row[0]) if row else None
                row = conn.execute(self._SQL, {"app": self.app_db, "dag": self.dagster_db}).fetchone()
                if row is not None:
                    self.samples += 1
                    client, everything, app, dag = (int(x) for x in row)
                    self.peak_all = max(self.peak_all, everything)
                    self.peak_stack = max(self.peak_stack, app + dag)
                    if client > self.peak_client:
                        self.peak_client = client
                        self.peak_at = time.monotonic() - self.started_at
                        self.peak_detail = {"app_db": app, "dagster_db": dag, "other": client - app - dag}
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
            self.stop.wait(self.interval)
        if conn is not None:
            conn.close()


@dataclass
class _Kill:
    run_id: str
    pid: int
    at: float  # epoch seconds
    routing_ids: list[str]
    claimed_before: int
    company_id: str | None = None
    lease_left_s: float | None = None  # how long the dead run's leases still had to run at the kill


@dataclass
class _ChaosLog:
    kills: list[_Kill] = field(default_factory=list)
    restart_at: float | None = None  # epoch seconds
    restart_s: float | None = None
    restart_error: str | None = None
    foreign_clients_at_restart: int | None = None  # other users of a shared server, disconnected by the restart
    notes: list[str] = field(default_factory=list)


def _chaos(
    server: _Server,
    app_db: str,
    dagster_db: str,
    log: _ChaosLog,
    stop: threading.Event,
    *,
    start_after: float = 8.0,
    kills: int = 2,
    gap: float = 5.0,
    restart_after: float = 15.0,
    give_up_after: float = 150.0,
) -> None:
    """SIGKILL `kills` delivery run workers that hold claimed routings (`gap` s apart), then restart the server."""
    began = time.monotonic()
    if stop.wait(start_after):
        return
    host = socket.gethostname()
    killed_runs: set[str] = set()
    last_kill = 0.0
    while len(log.kills) < kills and not stop.is_set() and time.monotonic() - began < give_up_after:
        if time.monotonic() - last_kill < gap:
            stop.wait(0.2)
            continue
        try:
            with psycopg.connect(server.libpq(app_db), autocommit=True, connect_timeout=3) as conn:
                held = {
                    str(owner): [str(i) for i in ids]
                    for owner, ids in conn.execute(
                        "SELECT lease_owner, array_agg(id) FROM job_routings WHERE "  # noqa: S608 - constant
                        + HELD
                        + " GROUP BY lease_owner ORDER BY count(*) DESC"
                    ).fetchall()
                }
            if not held:
                stop.wait(0.3)
                continue
            with psycopg.connect(server.libpq(dagster_db), autocommit=True, connect_timeout=3) as conn:
                workers = conn.execute(
                    "SELECT r.run_id, p.value FROM runs r "
                    "JOIN run_tags p ON p.run_id = r.run_id AND p.key = %s "
                    "JOIN run_tags h ON h.run_id = r.run_id AND h.key = %s AND h.value = %s "
                    "WHERE r.status = 'STARTED' AND r.pipeline_name = 'deliver_routings' AND r.run_id = ANY(%s)",
                    (PID_TAG, HOST_TAG, host, list(held)),
                ).fetchall()
        except psycopg.Error as exc:
            log.notes.append(f"chaos query failed: {type(exc).__name__}")
            stop.wait(1)
            continue
        candidates = sorted(
            ((str(run_id), int(pid)) for run_id, pid in workers if str(run_id) not in killed_runs),
            key=lambda c: -len(held.get(c[0], [])),
        )
        if not candidates:
            stop.wait(0.3)
            continue
        run_id, pid = candidates[0]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            killed_runs.add(run_id)
            continue
        at = time.time()
        last_kill = time.monotonic()
        killed_runs.add(run_id)
        rows: list[tuple[Any, ...]] = []
        try:  # what the dead worker left claimed (it may have finished some between the query and the kill)
            with psycopg.connect(server.libpq(app_db), autocommit=True, connect_timeout=3) as conn:
                rows = conn.execute(
                    HELD_BY_RUN,
                    (run_id,),
                ).fetchall()
        except psycopg.Error:
            pass
        kill = _Kill(run_id, pid, at, [str(r[0]) for r in rows] or held[run_id], len(held[run_id]))
        if rows:
            kill.company_id = str(rows[0][1])
            expires = [float(r[2]) for r in rows if r[2] is not None]
            kill.lease_left_s = round(max(expires) - at, 1) if expires else None
        log.kills.append(kill)
    if len(log.kills) < kills:
        log.notes.append(f"only {len(log.kills)} of {kills} run workers could be killed (no run held claims)")
    if server.restart is None:
        log.notes.append("no PostgreSQL restart: " + server.restart_how)
        return
    if stop.wait(restart_after):
        return
    try:
        with psycopg.connect(server.libpq("postgres"), autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid() AND datname <> ALL(%s)",
                ([app_db, dagster_db],),
            ).fetchone()
            log.foreign_clients_at_restart = int(row[0]) if row else None
    except psycopg.Error:
        pass
    log.restart_at = time.time()
    started = time.monotonic()
    try:
        server.restart()
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        log.restart_error = f"{type(exc).__name__}: {exc}"[:300]
    log.restart_s = round(time.monotonic() - started, 2)


# --------------------------------------------------------------------------------------------------------------
# set-up, posting, measuring
# --------------------------------------------------------------------------------------------------------------


def _setup_companies(
    engine: Engine, sandbox_url: str, companies: int, rate: float, faults: dict[str, Any] | None
) -> list[tuple[uuid.UUID, str, str]]:
    """Receiving companies (skill `trade_{i}`, one zip), each on its own sandbox tenant: even ones booking mode,
    odd ones job mode. Returns (company id, tenant id, mode)."""
    from bench.__main__ import add_receiver
    from integration_core.db.engine import session_scope

    out: list[tuple[uuid.UUID, str, str]] = []
    with httpx.Client(base_url=sandbox_url, timeout=30) as sandbox, session_scope(engine) as session:
        for i in range(companies):
            tenant, mode = str(TENANT_BASE + i), "booking" if i % 2 == 0 else "job"
            company = add_receiver(
                session,
                sandbox,
                i,
                tenant=tenant,
                label="burst",
                zip_code=ZIP_CODE,
                mode=mode,
                rate=rate,
                faults=faults,
            )
            out.append((company, tenant, mode))
    return out


@dataclass
class _Posted:
    job_ids: list[str]
    errors: Counter[str]
    failed: int
    latencies: list[float]
    wall_s: float


def _post(api_url: str, referrals: int, companies: int, concurrency: int) -> _Posted:
    """Post every referral as fast as the API takes them (`concurrency` in flight); a failed post is retried
    (same Idempotency-Key) up to 3 times."""
    from integration_core.local.seed import demo_company_id, demo_technician_id

    referrer, tech = demo_company_id("handy-neighbors"), demo_technician_id("handy-neighbors")
    tag = uuid.uuid4().hex[:8]
    lock = threading.Lock()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    client = httpx.Client(
        base_url=api_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )

    def one(n: int) -> str | None:
        body = {
            "summary": f"Burst referral {n}",
            "homeowner": {"name": f"Owner {n}", "phone": f"512-555-{n:04d}"},
            "address": {"street": f"{n} Congress Ave", "city": "Austin", "state": "TX", "zip_code": ZIP_CODE},
            "created_by_company_id": str(referrer),
            "created_by_technician_id": str(tech),
            "required_skills": [f"trade_{n % companies}"],
        }
        for attempt in range(4):
            started = time.monotonic()
            try:
                r = client.post("/api/jobs/", headers={"Idempotency-Key": f"burst-{tag}-{n}"}, json=body)
            except httpx.HTTPError as exc:
                with lock:
                    errors[type(exc).__name__] += 1
            else:
                if r.status_code in (200, 201):
                    with lock:
                        latencies.append(time.monotonic() - started)
                    return str(r.json()["id"])
                with lock:
                    errors[str(r.status_code)] += 1
            time.sleep(0.5 * 2**attempt)
        return None

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="burst-post") as pool:
            results = list(pool.map(one, range(referrals)))
    finally:
        client.close()
    wall = time.monotonic() - started
    ids = [r for r in results if r is not None]
    return _Posted(ids, errors, referrals - len(ids), latencies, wall)


def _routing_counts(engine: Engine, job_ids: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        rows: list[Any] = list(
            conn.execute(
                text(
                    "SELECT r.status, count(*) FROM job_routings r WHERE r.job_id = ANY(CAST(:ids AS uuid[])) "
                    "GROUP BY r.status"
                ),
                {"ids": job_ids},
            ).all()
        )
        unrouted = conn.execute(
            text(
                "SELECT count(*) FROM jobs j WHERE j.id = ANY(CAST(:ids AS uuid[])) "
                "AND NOT EXISTS (SELECT 1 FROM job_routings r WHERE r.job_id = j.id)"
            ),
            {"ids": job_ids},
        ).scalar()
    counts = {str(s): int(n) for s, n in rows}
    if unrouted:
        counts["no_routing"] = int(unrouted)
    return counts


def _wait_for_sync(engine: Engine, job_ids: list[str], deadline: float, until: Callable[[], bool]) -> dict[str, int]:
    """Poll until every routing of `job_ids` is in a terminal status and `until()` holds, or the deadline."""
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            counts = _routing_counts(engine, job_ids)
        except SQLAlchemyError:
            time.sleep(1)  # the server restarting
            continue
        open_ = sum(n for s, n in counts.items() if s not in TERMINAL)
        if not open_ and until():
            break
        time.sleep(1)
    return counts


def _latencies(engine: Engine, job_ids: list[str]) -> tuple[list[float], dict[str, float | None]]:
    """Post -> synced per synced routing, and where it goes (`phases`): waiting for a run to send it (job created
    -> its first delivery attempt) and sending (first attempt -> synced: the rate-limited requests, retries
    included). One read of the routings for both."""
    with engine.connect() as conn:
        rows: Any = conn.execute(
            text(
                "SELECT extract(epoch FROM r.synced_at - j.created_at), extract(epoch FROM a.first - j.created_at), "
                "extract(epoch FROM r.synced_at - a.first) "
                "FROM job_routings r JOIN jobs j ON j.id = r.job_id "
                "LEFT JOIN (SELECT routing_id, min(started_at) AS first FROM sync_attempts GROUP BY routing_id) a "
                "ON a.routing_id = r.id "
                "WHERE r.synced_at IS NOT NULL AND j.id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": job_ids},
        ).all()
    attempted = [(float(w), float(s)) for _, w, s in rows if w is not None]
    waits, sends = [w for w, _ in attempted], [s for _, s in attempted]

    def r(x: float | None) -> float | None:
        return round(x, 3) if x is not None else None

    return [float(total) for total, _, _ in rows], {
        "wait_p50_s": r(percentile(waits, 0.5)),
        "wait_p95_s": r(percentile(waits, 0.95)),
        "send_p50_s": r(percentile(sends, 0.5)),
        "send_p95_s": r(percentile(sends, 0.95)),
    }


def _sandbox_records(sandbox_url: str, tenants: set[str], synced: set[str]) -> dict[str, int]:
    """Duplicates per routing marker (as `throughput` counts them), and synced routings the sandbox has no
    record of."""
    info = httpx.get(sandbox_url + "/_sandbox/inspect", timeout=60).json()["tenants"]
    duplicates = 0
    seen: set[str] = set()
    requests: Counter[str] = Counter()
    for tenant, report in info.items():
        if tenant not in tenants:
            continue
        duplicates += sum(n - 1 for counts in report["markers"].values() for n in counts.values() if n > 1)
        for kind in ("bookings", "jobs"):
            for marker in report["markers"].get(kind, {}):
                seen.add(marker.split("=", 1)[-1])
        for status, n in report.get("requests_by_status", {}).items():
            requests[status] += int(n)
        for fault, n in report.get("faults", {}).get("counts", {}).items():
            requests[f"fault_{fault}"] += int(n)
    return {
        "duplicates": duplicates,
        "records": len(seen),
        "synced_without_record": len(synced - seen),
        **{f"sandbox_{k}": v for k, v in sorted(requests.items())},
    }


def _synced_ids(engine: Engine, job_ids: list[str]) -> set[str]:
    with engine.connect() as conn:
        ids: Any = conn.execute(
            text("SELECT id FROM job_routings WHERE status = 'synced' AND job_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": job_ids},
        ).scalars()
        return {str(i) for i in ids}


def _dagster_runs(server: _Server, dagster_db: str) -> dict[str, Any]:
    with psycopg.connect(server.libpq(dagster_db), connect_timeout=5) as conn:
        by_status = {
            str(s): int(n)
            for s, n in conn.execute(
                "SELECT status, count(*) FROM runs WHERE pipeline_name = 'deliver_routings' GROUP BY status"
            ).fetchall()
        }
        timing = conn.execute(
            "SELECT avg(start_time - extract(epoch FROM create_timestamp)), "
            "max(start_time - extract(epoch FROM create_timestamp)) "
            "FROM runs WHERE pipeline_name = 'deliver_routings' AND start_time IS NOT NULL"
        ).fetchone()
        # where a run's slot time goes: queued → started → its step starts → its step ends → the run ends
        phases = conn.execute(
            """
            WITH ev AS (
                SELECT e.run_id,
                       min(t) FILTER (WHERE e.dagster_event_type = 'PIPELINE_START') AS run_start,
                       min(t) FILTER (WHERE e.dagster_event_type = 'STEP_START') AS step_start,
                       max(t) FILTER (WHERE e.dagster_event_type IN ('STEP_SUCCESS', 'STEP_FAILURE')) AS step_end,
                       max(t) FILTER (WHERE e.dagster_event_type IN ('PIPELINE_SUCCESS', 'PIPELINE_FAILURE')) AS run_end
                  FROM event_logs e JOIN runs r ON r.run_id = e.run_id,
                       LATERAL (SELECT extract(epoch FROM e.timestamp) AS t) ts
                 WHERE r.pipeline_name = 'deliver_routings'
                 GROUP BY e.run_id
            )
            SELECT avg(step_start - run_start), avg(step_end - step_start), avg(run_end - step_end),
                   max(step_start - run_start), max(run_end - step_end)
              FROM ev
            """
        ).fetchone()
        failures = conn.execute(
            "SELECT e.dagster_event_type, e.event FROM event_logs e JOIN runs r ON r.run_id = e.run_id "
            "WHERE r.pipeline_name = 'deliver_routings' AND e.dagster_event_type IN ('RUN_FAILURE', 'STEP_FAILURE')"
        ).fetchall()
    reasons: Counter[str] = Counter()
    for kind, raw in failures:
        try:
            event = json.loads(raw)
            data = (event.get("dagster_event") or {}).get("event_specific_data") or {}
            error = data.get("error") or {}
            message = error.get("message") or event.get("user_message") or ""
        except (ValueError, AttributeError):
            message = str(raw)[:200]
        reasons[f"{kind}: {_normalize(message.strip().splitlines()[0] if message.strip() else '')}"] += 1
    return {
        "runs_launched": sum(by_status.values()),
        "runs_failed": by_status.get("FAILURE", 0),
        "runs_by_status": by_status,
        "run_mean_queue_to_start_s": round(float(timing[0]), 2) if timing and timing[0] is not None else None,
        "run_max_queue_to_start_s": round(float(timing[1]), 2) if timing and timing[1] is not None else None,
        "run_failure_reasons": dict(reasons.most_common(8)),
        "run_phases_mean_s": {
            name: round(float(v), 2) if v is not None else None
            for name, v in zip(
                ("start_to_step", "step", "step_end_to_run_end", "max_start_to_step", "max_step_end_to_run_end"),
                phases or (),
                strict=False,
            )
        },
    }


_HEX = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|\b0x[0-9a-f]+\b|\d+")
_ERROR_LINE = re.compile(r"\b([A-Za-z_.]*(?:Error|Exception|Failure)|FATAL|too many clients)\b.*")
LOG_PATTERNS = {
    "too_many_clients": "too many clients",
    "traceback": "Traceback (most recent call last)",
    "operational_error": "OperationalError",
    "admin_shutdown": "terminating connection due to administrator command",
    "connection_refused": "Connection refused",
    "pool_timeout": "QueuePool limit",
    "server_closed": "server closed the connection unexpectedly",
}


def _normalize(line: str) -> str:
    return _HEX.sub("N", line)[:200]


def _scan_logs(data_dir: Path) -> dict[str, Any]:
    """Counts of known failure patterns per log file, and the most frequent error lines (numbers/ids folded)."""
    counts: dict[str, dict[str, int]] = {}
    top: Counter[str] = Counter()
    for path in [*sorted((data_dir / "logs").glob("*.log")), data_dir / "si-run.log"]:
        if not path.exists():
            continue
        found: Counter[str] = Counter()
        with path.open(errors="replace") as fh:
            for line in fh:
                for name, needle in LOG_PATTERNS.items():
                    if needle in line:
                        found[name] += 1
                m = _ERROR_LINE.search(line)
                if m and "INFO" not in line[:60]:
                    top[f"{path.name}: {_normalize(m.group(0).strip())}"] += 1
        if found:
            counts[path.name] = dict(found)
    return {"patterns": counts, "top_error_lines": dict(top.most_common(10))}


def _stack_processes(stack: Any) -> dict[str, Any]:
    from integration_core.local.processes import pid_alive

    state_file = Path(stack.data_dir) / "run" / "stack.json"
    procs: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError, ValueError):
        procs = json.loads(state_file.read_text()).get("processes", [])
    dead = [str(p["name"]) for p in procs if not pid_alive(int(p["pid"]))]
    supervisor_alive = stack.proc is not None and stack.proc.poll() is None
    try:
        api_db = httpx.get(stack.api_url + "/api/health/component/db", timeout=10).status_code
    except httpx.HTTPError:
        api_db = None
    return {"supervisor_alive": supervisor_alive, "dead": dead, "api_health_db_status": api_db}


# --------------------------------------------------------------------------------------------------------------
# the scenarios
# --------------------------------------------------------------------------------------------------------------


def _run(
    name: str,
    *,
    referrals: int,
    companies: int,
    rate: float,
    concurrency: int,
    wait_s: float,
    chaos: bool,
    server_url: str,
) -> dict[str, Any]:
    from integration_core.local.stack import LocalStack

    wall_started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix=f"si-bench-{name.replace('_', '-')}-"))
    server = _server(server_url, data_dir)
    app_db, dagster_db = f"si_{name}_{os.getpid()}", f"si_{name}_{os.getpid()}_dagster"
    app_url = _fresh_database(server.admin_sqlalchemy, app_db)  # migrated (`si run` migrates again: a no-op)
    _create_empty_database(server, dagster_db)
    env = {
        "API_TOKEN": TOKEN,
        "SECRET_KEY": SECRET,
        "SANDBOX_OFFICE_ENABLED": "false",
        "DATABASE_URL": server.libpq(app_db),
        "DAGSTER_DATABASE_URL": server.libpq(dagster_db),
    }
    stack = LocalStack(data_dir, env)
    sampler = _ConnectionSampler(server, app_db, dagster_db)
    stop = threading.Event()
    chaos_log = _ChaosLog()
    chaos_thread: threading.Thread | None = None
    engine = create_engine(app_url, pool_pre_ping=True, pool_size=2, max_overflow=0)
    try:
        sampler.start()
        stack.start()
        stack_up_s = time.monotonic() - wall_started
        receivers = _setup_companies(engine, stack.sandbox_url, companies, rate, CHAOS_FAULTS if chaos else None)
        if chaos:
            chaos_thread = threading.Thread(
                target=_chaos, args=(server, app_db, dagster_db, chaos_log, stop), name="burst-chaos", daemon=True
            )
            chaos_thread.start()
        post_epoch = time.time()
        posted = _post(stack.api_url, referrals, companies, concurrency)
        posted_at = time.monotonic()
        ct = chaos_thread
        counts = _wait_for_sync(
            engine, posted.job_ids, posted_at + wait_s, until=lambda: ct is None or not ct.is_alive()
        )
        waited = time.monotonic() - posted_at
        stop.set()
        latencies, phases = _latencies(engine, posted.job_ids)
        synced = _synced_ids(engine, posted.job_ids)
        sandbox = _sandbox_records(stack.sandbox_url, {t for _, t, _ in receivers}, synced)
        runs = _dagster_runs(server, dagster_db)
        processes = _stack_processes(stack)
        kills: list[dict[str, Any]] = []
        modes = {str(c): m for c, _, m in receivers}
        for k in chaos_log.kills:
            with engine.connect() as conn:
                row = conn.execute(
                    text(
                        "SELECT count(*), count(synced_at), extract(epoch FROM max(synced_at)) FROM job_routings "
                        "WHERE id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": k.routing_ids},
                ).one()
            total, done, last = int(row[0]), int(row[1]), row[2]
            recovered = round(max(0.0, float(last) - k.at), 2) if total and done == total and last else None
            kills.append(
                {
                    "run_id": k.run_id,
                    "pid": k.pid,
                    "at_s_after_first_post": round(k.at - post_epoch, 1),
                    "mode": modes.get(k.company_id or ""),
                    "lease_left_at_kill_s": k.lease_left_s,
                    "routings_held": total,
                    "synced": done,
                    "recovered_s": recovered,
                }
            )
        restart: dict[str, Any] | None = None
        if chaos:
            resumed = None
            if chaos_log.restart_at is not None:
                with engine.connect() as conn:
                    first = conn.execute(
                        text(
                            "SELECT extract(epoch FROM min(synced_at)) FROM job_routings "
                            "WHERE synced_at > to_timestamp(:t)"
                        ),
                        {"t": chaos_log.restart_at + (chaos_log.restart_s or 0)},
                    ).scalar()
                if first is not None:
                    resumed = round(float(first) - chaos_log.restart_at, 2)
            restart = {
                "how": server.restart_how,
                "done": chaos_log.restart_at is not None and chaos_log.restart_error is None,
                "took_s": chaos_log.restart_s,
                "error": chaos_log.restart_error,
                "foreign_clients_disconnected": chaos_log.foreign_clients_at_restart,
                "at_s_after_first_post": round(chaos_log.restart_at - post_epoch, 1) if chaos_log.restart_at else None,
                "first_sync_after_s": resumed,
            }
    finally:
        stop.set()
        if chaos_thread is not None:
            chaos_thread.join(60)
        engine.dispose()
        stack.stop()
        sampler.stop.set()
        sampler.join(10)
        if os.environ.get("BENCH_KEEP_DATABASES") == "1":  # to look at the run afterwards (the local server only)
            print(f"kept databases {app_db} and {dagster_db}", file=sys.stderr)
        else:
            _drop_databases(server, [app_db, dagster_db])
        if server.kind == "embedded":
            from integration_core.db.embedded import stop_server

            stop_server(data_dir)
    logs = _scan_logs(data_dir)
    lost = posted.failed + sum(n for s, n in counts.items() if s != "synced")
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    max_conn = sampler.max_connections
    ratio = round(sampler.peak_client / max_conn, 3) if max_conn else None
    result: dict[str, Any] = {
        "scenario": name,
        "referrals": referrals,
        "companies": companies,
        "modes": dict(Counter(m for _, _, m in receivers)),
        "per_tenant_rate_per_s": rate,
        "database": f"{server.kind} ({make_url(server.admin_sqlalchemy).render_as_string(True)})",
        "stack_up_s": round(stack_up_s, 1),
        "post_wall_s": round(posted.wall_s, 2),
        "post_rate_per_s": round(referrals / posted.wall_s, 1) if posted.wall_s else None,
        "post_p50_s": round(percentile(posted.latencies, 0.5) or 0, 3),
        "post_p95_s": round(percentile(posted.latencies, 0.95) or 0, 3),
        "post_errors": dict(posted.errors),
        "post_failed": posted.failed,
        "waited_s": round(waited, 1),
        "routings_by_status": counts,
        "synced": len(latencies),
        "lost": lost,
        **sandbox,
        "p50_s": round(p50, 3) if p50 is not None else None,
        "p95_s": round(p95, 3) if p95 is not None else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "phases": phases,
        "peak_connections": sampler.peak_client,
        "peak_connections_incl_background": sampler.peak_all,
        "peak_connections_by_db": sampler.peak_detail,
        "peak_connections_stack_dbs": sampler.peak_stack,
        "peak_at_s": round(sampler.peak_at, 1) if sampler.peak_at is not None else None,
        "max_connections": max_conn,
        "peak_connections_ratio": ratio,
        "connection_samples": sampler.samples,
        "connection_sample_errors": sampler.errors,
        **runs,
        "stack": processes,
        "log_errors": logs,
        "data_dir": str(data_dir),
        "wall_s": round(time.monotonic() - wall_started, 1),
    }
    if not chaos:
        result["targets"] = {
            "runs_failed": "== 0",
            "duplicates": "== 0",
            "lost": "== 0",
            "peak_connections_ratio": "<= 0.80",
            "p50_s": "<= 15",
            "p95_s": "<= 45",
        }
        result["met"] = bool(
            latencies
            and runs["runs_failed"] == 0
            and sandbox["duplicates"] == 0
            and lost == 0
            and ratio is not None
            and ratio <= 0.80
            and (p50 or 99) <= 15
            and (p95 or 99) <= 45
        )
    else:
        result["kills"] = kills
        result["kill_recovery_s"] = [k["recovered_s"] for k in kills]
        result["pg_restart"] = restart
        result["chaos_notes"] = chaos_log.notes
        result["faults"] = CHAOS_FAULTS
        result["targets"] = {"duplicates": "== 0", "lost": "== 0", "kill_recovery_s": "each <= 60 (2 kills)"}
        result["met"] = bool(
            sandbox["duplicates"] == 0
            and lost == 0
            and len(kills) == 2
            and all(k["recovered_s"] is not None and k["recovered_s"] <= 60 for k in kills)
            and restart is not None
            and restart["done"]
        )
    return result


def burst(
    referrals: int = 500,
    companies: int = 50,
    *,
    rate: float = 5.0,
    concurrency: int = 8,
    wait_s: float = 240.0,
    server_url: str = DEFAULT_SERVER,
) -> dict[str, Any]:
    """A burst of referrals over many tenants, no faults (targets in the module docstring)."""
    return _run(
        "burst",
        referrals=referrals,
        companies=companies,
        rate=rate,
        concurrency=concurrency,
        wait_s=wait_s,
        chaos=False,
        server_url=server_url,
    )


def burst_chaos(
    referrals: int = 500,
    companies: int = 50,
    *,
    rate: float = 5.0,
    concurrency: int = 8,
    wait_s: float = 240.0,
    server_url: str = DEFAULT_SERVER,
) -> dict[str, Any]:
    """The burst with provider faults, two run workers SIGKILLed and one PostgreSQL restart."""
    return _run(
        "burst_chaos",
        referrals=referrals,
        companies=companies,
        rate=rate,
        concurrency=concurrency,
        wait_s=wait_s,
        chaos=True,
        server_url=server_url,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["burst", "burst_chaos"])
    parser.add_argument("--referrals", type=int, default=500)
    parser.add_argument("--companies", type=int, default=50)
    parser.add_argument("--rate", type=float, default=5.0, help="requests/s per tenant (sandbox and connection)")
    parser.add_argument("--concurrency", type=int, default=8, help="posts in flight")
    parser.add_argument("--wait", type=float, default=240.0, help="seconds to wait for syncing after posting")
    parser.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        help="PostgreSQL server to use ('embedded', or when it does not answer: the embedded server)",
    )
    args = parser.parse_args()
    fn = burst if args.scenario == "burst" else burst_chaos
    result = fn(
        args.referrals,
        args.companies,
        rate=args.rate,
        concurrency=args.concurrency,
        wait_s=args.wait,
        server_url=args.server,
    )
    result["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result, indent=2), flush=True)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
