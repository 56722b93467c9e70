"""`make bench`: throughput under the tenant's budget, and referral → external id end to end.

Writes bench/results/latest.json (a list of scenarios) and prints one line per scenario.

- `throughput_latency_50ms` / `throughput_latency_300ms`: one tenant whose sandbox budget is R = 20 requests/s,
  2,000 routings, the provider answering after 50 ms / 300 ms. `budget_ratio` = requests accepted by the sandbox
  per second (first to last) ÷ R; `unhonoured_429` = 429s the sandbox served (the client paces itself under the
  budget, so any 429 means it sent when it should not have); `duplicates` / `lost` from the sandbox's records per
  marker and the routings left unsynced; `p50_s` / `p95_s` routed → synced. Target: ratio ≥ 0.90, 0 unhonoured.
- `throughput_hcp_lead_latency_50ms` / `…_300ms`: the same bar for Housecall Pro (`bench/housecallpro.py`).
- `sandbox_startup`: `si sandbox serve` process start → first health answer, median of 5. Target < 2 s.
- `webhook_latency` / `webhook_ingest` (`bench/webhooks.py`, docs/webhooks.md): sandbox completes a job → the
  routing shows completed with revenue through the whole stack, p50/p95 over 200 events (target p95 ≤ 5 s); and
  signed webhooks acknowledged per second by the API with the p99 acknowledgement time (target ≤ 1 s).
- `e2e`: the whole service (`si run`: embedded PostgreSQL, sandbox, API, Dagster webserver + daemon + code server)
  on a fresh data directory; 200 referrals posted through the API at 2/s over 10 receiving companies;
  referral → external id p50/p95 and the Dagster runs launched. Target: p50 ≤ 10 s, p95 ≤ 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-secret-key-0123456789abcdef"
TOKEN = "bench-api-token-0123456789"


def percentile(values: list[float], q: float) -> float | None:
    from integration_core.delivery.engine import percentile as p

    return p(values, q)


# --------------------------------------------------------------------------------------------------------------
# throughput
# --------------------------------------------------------------------------------------------------------------


def _server_admin_url() -> tuple[str, str]:
    """(SQLAlchemy URL of the server's `postgres` db, how it was chosen)."""
    from integration_core.db import embedded
    from integration_core.db.engine import normalize_url
    from integration_core.settings import get_settings

    configured = os.environ.get("DATABASE_URL")
    if configured:
        return make_url(normalize_url(configured)).set(database="postgres").render_as_string(False), "DATABASE_URL"
    socket_dir = embedded.ensure_server(get_settings().data_dir)
    return f"postgresql+psycopg://postgres:@/postgres?host={socket_dir}", "embedded"


def _fresh_database(admin: str, name: str) -> str:
    libpq = make_url(admin).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(False)
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    return url


def _drop_database(admin: str, name: str) -> None:
    libpq = make_url(admin).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_for_sandbox(proc: subprocess.Popen[bytes], url: str, what: str) -> tuple[subprocess.Popen[bytes], str]:
    """Wait (60 s at most) until the sandbox at ``url`` has loaded its definitions; kill it if it does not."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/_sandbox/health", timeout=1).json()["definitions_loaded"]:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def _start_sandbox() -> tuple[subprocess.Popen[bytes], str]:
    from integration_core.local.http_server import free_port

    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "integration_core.cli", "sandbox", "serve", "--port", str(port), "--no-demo-tenants"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return _wait_for_sandbox(proc, f"http://127.0.0.1:{port}", "sandbox")


def throughput_world(engine: Any, receiver_name: str, connection: dict[str, Any], routings: int) -> uuid.UUID:
    """A referrer with one technician and ``routings`` jobs for distinct homeowners, all routed to one receiving
    company connected with ``connection``; the receiver's id."""
    from integration_core.db.engine import session_scope
    from integration_core.referrals.directory import create_company, upsert_connection
    from integration_core.schemas import CompanyCreate, ConnectionCreate

    with session_scope(engine) as session:
        referrer = create_company(session, CompanyCreate(name="Bench Referrer"), actor="bench")
        tech: uuid.UUID = session.execute(
            text("INSERT INTO technicians (company_id, name) VALUES (:c, 'T') RETURNING id"), {"c": referrer.id}
        ).scalar_one()
        receiver = create_company(session, CompanyCreate(name=receiver_name), actor="bench")
        upsert_connection(
            session, receiver.id, ConnectionCreate.model_validate(connection), secret_key=SECRET, actor="bench"
        )
        receiver_id: uuid.UUID = receiver.id
    with engine.begin() as conn:
        jobs: list[uuid.UUID] = list(
            conn.execute(
                text(
                    "INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
                    "created_by_company_id, created_by_technician_id) SELECT 'Bench job ' || g, g || ' Main St', "
                    "'Austin', 'TX', '78701', 'Owner ' || g, '512555' || lpad(g::text, 4, '0'), :r, :t "
                    "FROM generate_series(1, :n) g RETURNING id"
                ),
                {"r": referrer.id, "t": tech, "n": routings},
            )
            .scalars()
            .all()
        )
        conn.execute(
            text("INSERT INTO job_routings (job_id, receiving_company_id) SELECT unnest(CAST(:j AS uuid[])), :rc"),
            {"j": list(jobs), "rc": receiver_id},
        )
    return receiver_id


def timed_drain(url: str, receiver_id: uuid.UUID) -> tuple[Any, float]:
    """``drain`` the receiver's routings (one hour at most): its summary and the wall-clock seconds it took."""
    from integration_core.delivery.engine import drain
    from integration_core.settings import Settings

    settings = Settings(DATABASE_URL=url, SECRET_KEY=SECRET, ENVIRONMENT="test")

    async def run() -> Any:
        aengine = create_async_engine(url, pool_size=20, max_overflow=10)
        try:
            return await drain(aengine, settings, receiver_id, "bench", time_budget_seconds=3600)
        finally:
            await aengine.dispose()

    started = time.monotonic()
    summary = asyncio.run(run())
    return summary, time.monotonic() - started


def count_unsynced(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM job_routings WHERE status <> 'synced'")).scalar() or 0)


def throughput_result(
    head: dict[str, Any],
    info: dict[str, Any],
    budget: float,
    routings: int,
    summary: Any,
    wall: float,
    unsynced: int,
    duplicates: int,
    *,
    per_routing: bool = False,
) -> dict[str, Any]:
    """A throughput scenario's figures from the sandbox's ``inspect`` (accepted timestamps, 429s served) and the
    drain's summary; ``head`` (scenario, provider) first; ``per_routing``: also requests per routing."""
    stamps = info["accepted_timestamps"]
    span = (stamps[-1] - stamps[0]) if len(stamps) > 1 else wall
    achieved = (len(stamps) - 1) / span if span > 0 else 0.0
    result: dict[str, Any] = {**head, "budget_per_s": budget, "routings": routings, "requests_accepted": len(stamps)}
    if per_routing:
        result["requests_per_routing"] = round(len(stamps) / routings, 2) if routings else None
    return result | {
        "achieved_per_s": round(achieved, 3),
        "budget_ratio": round(achieved / budget, 4),
        "max_requests_in_any_1s_window": info["max_requests_in_any_1s_window"],
        "429s": info["rate_limited"],
        "unhonoured_429": info["rate_limited"],
        "duplicates": duplicates,
        "lost": int(unsynced or 0),
        "p50_s": round(summary.percentile(0.5) or 0, 3),
        "p95_s": round(summary.percentile(0.95) or 0, 3),
        "limiter_wait_s": round(summary.limiter_wait_seconds, 1),
        "wall_s": round(wall, 1),
        "targets": {"budget_ratio": ">= 0.90", "unhonoured_429": "== 0"},
        "met": achieved / budget >= 0.90 and info["rate_limited"] == 0 and duplicates == 0 and not unsynced,
    }


def throughput(latency_ms: int, routings: int, budget: float = 20.0) -> dict[str, Any]:
    admin, _ = _server_admin_url()
    url = _fresh_database(admin, f"si_bench_{os.getpid()}")
    sandbox, sandbox_url = _start_sandbox()
    try:
        tenant = "9001"
        t = httpx.post(
            sandbox_url + "/_sandbox/tenants",
            json={
                "tenant_id": tenant,
                "client_id": "cid.bench",
                "client_secret": "cs1.bench",
                "app_key": "ak1.bench",
                "rate": budget,
                "burst": int(budget),
            },
        ).json()
        httpx.put(
            f"{sandbox_url}/_sandbox/tenants/{tenant}/faults",
            json={"latency": {"kind": "fixed", "ms": latency_ms}, "applies_to": "all"},
        ).raise_for_status()
        engine = create_engine(url)
        receiver_id = throughput_world(
            engine,
            "Bench Receiver",
            {
                "environment": "sandbox",
                "base_url": sandbox_url,
                "tenant_id": tenant,
                "client_id": "cid.bench",
                "client_secret": "cs1.bench",
                "app_key": "ak1.bench",
                "booking_provider_id": t["booking_provider_ids"][0],
                "rate_limit_per_second": budget,
                "rate_limit_burst": 10,
            },
            routings,
        )
        summary, wall = timed_drain(url, receiver_id)
        info = httpx.get(f"{sandbox_url}/_sandbox/tenants/{tenant}/inspect", params={"timestamps": "true"}).json()
        unsynced = count_unsynced(engine)
        engine.dispose()
        duplicates = sum(n - 1 for counts in info["markers"].values() for n in counts.values() if n > 1)
        head = {"scenario": f"throughput_latency_{latency_ms}ms"}
        return throughput_result(head, info, budget, routings, summary, wall, unsynced, duplicates)
    finally:
        sandbox.terminate()
        sandbox.wait(10)
        _drop_database(admin, f"si_bench_{os.getpid()}")


# --------------------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------------------


def add_receiver(
    session: Any,
    sandbox: httpx.Client,
    i: int,
    *,
    tenant: str,
    label: str,
    zip_code: str,
    mode: str = "booking",
    rate: float | None = None,
    faults: dict[str, Any] | None = None,
) -> uuid.UUID:
    """Receiving company `i` (skill `trade_{i}`, one zip) on its own sandbox tenant, with its connection; `rate`
    sets the tenant's budget and the connection's alike (requests/s), `faults` the tenant's fault injection."""
    from integration_core.referrals.directory import create_company, upsert_connection
    from integration_core.schemas import CompanyCreate, ConnectionCreate

    creds = {"client_id": f"cid.{label}{i}", "client_secret": f"cs1.{label}{i}", "app_key": f"ak1.{label}"}
    limits = {} if rate is None else {"rate": rate, "burst": max(1, int(rate))}
    r = sandbox.post("/_sandbox/tenants", json={"tenant_id": tenant, **creds, **limits})
    r.raise_for_status()
    t = r.json()
    if faults:
        sandbox.put(f"/_sandbox/tenants/{tenant}/faults", json={**faults, "seed": i}).raise_for_status()
    company = create_company(
        session,
        CompanyCreate.model_validate(
            {
                "name": f"{label.title()} Receiver {i:02d}",
                "service_zip_codes": [zip_code],
                "skills": [{"skill": f"trade_{i}", "level": "expert", "primary": True}],
            }
        ),
        actor="bench",
    )
    connection: dict[str, Any] = {
        "environment": "sandbox",
        "base_url": str(sandbox.base_url).rstrip("/"),
        "tenant_id": tenant,
        **creds,
        "delivery_mode": mode,
        "booking_provider_id": t["booking_provider_ids"][0],
        "business_unit_id": t["business_unit_ids"][0],
        "job_type_id": t["job_type_ids"][0],
        "campaign_id": t["campaign_ids"][0],
        "external_data_guid": t["external_data_guid"],
    }
    if rate is not None:
        connection |= {"rate_limit_per_second": rate, "rate_limit_burst": max(1, int(rate))}
    upsert_connection(
        session, company.id, ConnectionCreate.model_validate(connection), secret_key=SECRET, actor="bench"
    )
    return company.id


def post_referral(
    api: httpx.Client, n: int, key: str, referrer: Any, tech: Any, *, zip_code: str, companies: int
) -> str:
    """``POST /api/jobs/`` the ``n``-th referral (homeowner ``Owner n``, skill ``trade_<n % companies>``); its id."""
    r = api.post(
        "/api/jobs/",
        headers={"Idempotency-Key": key},
        json={
            "summary": f"Referral {n}",
            "homeowner": {"name": f"Owner {n}", "phone": f"512-555-{n:04d}"},
            "address": {"street": f"{n} Congress Ave", "city": "Austin", "state": "TX", "zip_code": zip_code},
            "created_by_company_id": str(referrer),
            "created_by_technician_id": str(tech),
            "required_skills": [f"trade_{n % companies}"],
        },
    )
    r.raise_for_status()
    job_id: str = r.json()["id"]
    return job_id


def e2e(referrals: int = 200, per_second: float = 2.0, companies: int = 10) -> dict[str, Any]:
    from integration_core.db import embedded
    from integration_core.db.engine import session_scope
    from integration_core.local.seed import demo_company_id, demo_technician_id
    from integration_core.local.stack import LocalStack

    data_dir = Path(tempfile.mkdtemp(prefix="si-bench-e2e-"))
    env = {"API_TOKEN": TOKEN, "SECRET_KEY": SECRET, "SANDBOX_OFFICE_ENABLED": "false"}
    stack = LocalStack(data_dir, env, embedded=True)  # the embedded default, whatever this shell has set
    stack.start()
    try:
        socket_dir = embedded.ensure_server(data_dir)
        url = f"postgresql+psycopg://postgres:@/integration?host={socket_dir}"
        engine = create_engine(url)
        zip_code = "73301"
        # ten receiving companies in one area, each on its own sandbox tenant (booking mode)
        with httpx.Client(base_url=stack.sandbox_url, timeout=30) as sandbox, session_scope(engine) as session:
            for i in range(companies):
                add_receiver(session, sandbox, i, tenant=str(8001 + i), label="e2e", zip_code=zip_code)
        api = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        referrer, tech = demo_company_id("handy-neighbors"), demo_technician_id("handy-neighbors")
        job_ids: list[str] = []
        t0 = time.monotonic()
        for n in range(referrals):
            target = t0 + n / per_second
            time.sleep(max(0.0, target - time.monotonic()))
            job_ids.append(post_referral(api, n, f"bench-{n}", referrer, tech, zip_code=zip_code, companies=companies))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM job_routings WHERE status <> 'synced'")).scalar()
            if not left:
                break
            time.sleep(1)
        with engine.connect() as conn:
            rows: list[Any] = list(
                conn.execute(
                    text(
                        "SELECT extract(epoch FROM r.synced_at - j.created_at) AS s FROM job_routings r "
                        "JOIN jobs j ON j.id = r.job_id "
                        "WHERE r.synced_at IS NOT NULL AND j.id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": job_ids},
                )
                .scalars()
                .all()
            )
            unsynced = conn.execute(
                text(
                    "SELECT count(*) FROM job_routings r WHERE r.job_id = ANY(CAST(:ids AS "
                    "uuid[])) AND r.status <> 'synced'"
                ),
                {"ids": job_ids},
            ).scalar()
        dag = f"postgresql://postgres:@/dagster?host={socket_dir}"
        with psycopg.connect(dag) as conn:
            runs = conn.execute("SELECT count(*) FROM runs WHERE pipeline_name = 'deliver_routings'").fetchone()
            timing = conn.execute(
                # runs still linger for work when the figures are taken: queue→start over every started run,
                # duration over the ended ones (none, usually)
                "SELECT avg(start_time - extract(epoch FROM create_timestamp)), avg(end_time - start_time) "
                "FROM runs WHERE pipeline_name = 'deliver_routings' AND start_time IS NOT NULL"
            ).fetchone()
        engine.dispose()
        latencies = [float(x) for x in rows]
        p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
        return {
            "scenario": "e2e",
            "referrals": referrals,
            "companies": companies,
            "post_rate_per_s": per_second,
            "synced": len(latencies),
            "lost": int(unsynced or 0),
            "p50_s": round(p50 or 0, 3),
            "p95_s": round(p95 or 0, 3),
            "max_s": round(max(latencies), 3) if latencies else None,
            "runs_launched": int(runs[0]) if runs else 0,
            "run_mean_queue_to_start_s": round(float(timing[0]), 2) if timing and timing[0] is not None else None,
            "run_mean_duration_s": round(float(timing[1]), 2) if timing and timing[1] is not None else None,
            "targets": {"p50_s": "<= 10", "p95_s": "<= 20"},
            "met": bool(latencies) and (p50 or 99) <= 10 and (p95 or 99) <= 20 and not unsynced,
        }
    finally:
        stack.stop()
        from integration_core.db.embedded import stop_server

        stop_server(data_dir)


def sandbox_startup(runs: int = 5) -> dict[str, Any]:
    """`si sandbox serve`: process start → first /_sandbox/health answer, median of `runs` (target < 2 s)."""
    from integration_core.local.http_server import free_port

    timings: list[float] = []
    for _ in range(runs):
        port = free_port()
        started = time.monotonic()
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "integration_core.cli", "sandbox", "serve", "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while time.monotonic() - started < 30:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=0.5).status_code == 200:
                        timings.append(time.monotonic() - started)
                        break
                except httpx.TransportError:
                    time.sleep(0.02)
        finally:
            proc.terminate()
            proc.wait(10)
    median = percentile(timings, 0.5)
    return {
        "scenario": "sandbox_startup",
        "runs": runs,
        "p50_s": round(median or 0, 3),
        "max_s": round(max(timings), 3) if timings else None,
        "targets": {"p50_s": "< 2"},
        "met": median is not None and median < 2.0 and len(timings) == runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        choices=[
            "throughput",
            "throughput_hcp",
            "e2e",
            "sandbox",
            "burst",
            "burst_chaos",
            "scale",
            "report_daily",
            "webhooks",
        ],
        help="run one family of scenarios",
    )
    parser.add_argument("--routings", type=int, default=2000)
    parser.add_argument("--referrals", type=int, default=200)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    if args.only in (None, "throughput"):
        for latency in (50, 300):
            results.append(throughput(latency, args.routings))
            _line(results[-1])
    if args.only in (None, "throughput", "throughput_hcp"):
        from bench.housecallpro import throughput_hcp  # the same bar per provider (docs/housecallpro.md)

        for latency in (50, 300):
            results.append(throughput_hcp(latency))
            _line(results[-1])
    if args.only in (None, "sandbox"):
        results.append(sandbox_startup())
        _line(results[-1])
    if args.only in (None, "e2e"):
        results.append(e2e(args.referrals))
        _line(results[-1])
    if args.only in (None, "burst"):
        from bench.burst import burst

        results.append(burst())
        _line(results[-1])
    if args.only in (None, "burst_chaos"):
        from bench.burst import burst_chaos

        # restarts its PostgreSQL server: the embedded one, never the machine's shared server
        results.append(burst_chaos(server_url="embedded"))
        _line(results[-1])
    if args.only in (None, "scale"):
        from bench.scale import scale

        results.append(scale())
        _line(results[-1])
    if args.only in (None, "report_daily"):
        from bench.reports import report_daily  # one day of both daily reports over 1M routings (docs/reports.md)

        results.append(report_daily())
        _line(results[-1])
    if args.only in (None, "webhooks"):
        from bench.webhooks import webhook_ingest, webhook_latency  # docs/webhooks.md

        results.append(webhook_latency(args.referrals))
        _line(results[-1])
        results.append(webhook_ingest())
        _line(results[-1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    # the exit status is this run's verdict: the figures kept from earlier runs below do not change it
    met = all(r["met"] for r in results)
    if args.only:  # one family re-measured: keep the latest figures of the others
        ran = {r["scenario"] for r in results}
        with contextlib.suppress(FileNotFoundError, ValueError):
            kept = [r for r in json.loads((RESULTS / "latest.json").read_text()) if r.get("scenario") not in ran]
            results = kept + results
    doc = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "scenarios": results,
    }
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest-with-context.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if met else 1


def _line(r: dict[str, Any]) -> None:
    keys = (
        "budget_ratio",
        "unhonoured_429",
        "duplicates",
        "lost",
        "p50_s",
        "p95_s",
        "max_s",
        "runs_launched",
        "runs_failed",
        "peak_connections",
        "max_connections",
        "kill_recovery_s",
        "sensor_p50_ms",
        "claim_p50_ms",
        "events_per_s",
        "ack_p99_ms",
        "materialize_s",
        "peak_rss_mb",
    )
    figures = "  ".join(f"{k}={r[k]}" for k in keys if k in r)
    print(f"{r['scenario']:<26} {figures}  {'MET' if r['met'] else 'NOT MET'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
