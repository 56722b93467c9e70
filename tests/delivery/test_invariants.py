"""The invariant: under a seeded mix of faults, with batches racing each other and reconcile running in between,
every routing ends synced exactly once at the provider (duplicates = 0, lost = 0), or failed with a message."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import httpx
import pytest
from sqlalchemy import text

from integration_core.delivery.engine import deliver_batch, reconcile
from tests.support.delivery import run
from tests.support.world import add_receiver, add_routings

TENANTS = 5
PER_TENANT = 100
# a liveness bound, not a performance figure: a loaded 2-core machine (or coverage) needs more than 150 s
QUIET_DEADLINE_S = 300


@pytest.mark.parametrize("seed", [11, 23, 47])
def test_exactly_once_under_faults(db, database_url, engine_settings, sandbox, world, seed: int) -> None:
    rng = random.Random(seed)
    receivers: list[tuple[uuid.UUID, str, str]] = []
    for i in range(TENANTS):
        mode = "job" if i % 3 == 2 else "booking"
        company, tenant = add_receiver(db, sandbox, mode=mode)
        receivers.append((company, tenant, mode))
        sandbox.put_faults(
            tenant,
            seed=seed * 100 + i,
            applies_to="writes" if i else "all",  # one tenant also fails its reads (lookups)
            error_rate=0.10,
            commit_then_fail_rate=0.05,
            commit_then_fail_mode="drop" if i % 2 else "status",
            timeout_rate=0.05,
            timeout_s=1.3,  # the client gives up after 1.0 s
            latency={"kind": "uniform", "min_ms": 1, "max_ms": 30},
        )
        add_routings(db, world, company, PER_TENANT)

    async def chaos(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(0.5)
        storm_tenant = receivers[rng.randrange(TENANTS)][1]
        await client.post(f"/_sandbox/tenants/{storm_tenant}/storm", json={"seconds": 0.5, "retry_after": 1})
        await asyncio.sleep(0.7)
        revoke_tenant = receivers[rng.randrange(TENANTS)][1]
        await client.post(f"/_sandbox/tenants/{revoke_tenant}/revoke-tokens")

    async def worker(engine, company: uuid.UUID, name: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            s = await deliver_batch(engine, engine_settings, company, name, limit=25, rng=random.Random(name))
            if s.claimed == 0:
                await asyncio.sleep(0.05)

    async def reconciler(engine, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await reconcile(engine, engine_settings, f"reconcile-{n}")
            await asyncio.sleep(0.3)

    async def quiet(engine) -> bool:
        async with engine.connect() as conn:
            open_ = (
                await conn.execute(
                    text("SELECT count(*) FROM job_routings WHERE status IN ('pending', 'claimed', 'needs_reconcile')")
                )
            ).scalar_one()
        return bool(open_ == 0)

    async def body(engine) -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=sandbox.url) as control:
            tasks = [asyncio.create_task(chaos(control)), asyncio.create_task(reconciler(engine, stop))]
            for company, _, _ in receivers:
                tasks += [asyncio.create_task(worker(engine, company, f"run-{company}-{k}", stop)) for k in range(2)]
            deadline = time.monotonic() + QUIET_DEADLINE_S
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                if await quiet(engine):
                    break
            stop.set()
            await asyncio.gather(*tasks)

    run(database_url, body)

    with db.connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT r.id, r.status, r.external_id, r.last_error_message, c.account_id AS tenant_id "
                    "FROM job_routings r "
                    "JOIN provider_connections c ON c.company_id = r.receiving_company_id"
                )
            )
            .mappings()
            .all()
        )
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    assert set(by_status) <= {"synced", "failed"}, f"not quiet after {QUIET_DEADLINE_S}s: {by_status}"
    assert all(r["last_error_message"] for r in rows if r["status"] == "failed")

    faults_seen = 0
    for _company, tenant, mode in receivers:
        info = sandbox.inspect(tenant)
        faults_seen += sum(info["faults"]["counts"].values())
        markers = info["markers"]
        for kind, counts in markers.items():
            dups = {m.split("=", 1)[-1]: n for m, n in counts.items() if n > 1}
            assert not dups, f"duplicates at {tenant} {kind}: {_history(db, list(dups)[:3])}"
        delivered = (
            markers["bookings"] if mode == "booking" else {k.split("=", 1)[1]: v for k, v in markers["jobs"].items()}
        )
        synced = {str(r["id"]) for r in rows if r["tenant_id"] == tenant and r["status"] == "synced"}
        failed = {str(r["id"]) for r in rows if r["tenant_id"] == tenant and r["status"] == "failed"}
        assert synced <= set(delivered), "a synced routing has no record at the provider"
        assert set(delivered) - synced <= failed, "a record exists at the provider for an unsynced routing"
        assert len(synced) + len(failed) == PER_TENANT  # lost = 0
    assert faults_seen > 50  # the mix really happened


def _history(db, routing_ids: list[str]) -> str:
    """The attempt history of routings, to explain a failure."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT routing_id, id, run_id, operation, outcome, error_code, started_at, finished_at "
                "FROM sync_attempts WHERE routing_id = ANY(CAST(:ids AS uuid[])) ORDER BY routing_id, id"
            ),
            {"ids": routing_ids},
        ).all()
    return "\n".join(str(tuple(r)) for r in rows)
