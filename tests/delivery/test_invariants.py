"""The invariant: under a seeded mix of faults, with batches racing each other and reconcile running in between,
every routing ends synced exactly once at the provider (duplicates = 0, lost = 0), or failed with a message."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import pytest
from sqlalchemy import text

from tests.support.delivery import run
from tests.support.invariants import count_by_status, fault_mix, race_until_quiet, routing_history
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
        sandbox.put_faults(tenant, **fault_mix(seed, i))
        add_routings(db, world, company, PER_TENANT)

    async def chaos(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(0.5)
        storm_tenant = receivers[rng.randrange(TENANTS)][1]
        await client.post(f"/_sandbox/tenants/{storm_tenant}/storm", json={"seconds": 0.5, "retry_after": 1})
        await asyncio.sleep(0.7)
        revoke_tenant = receivers[rng.randrange(TENANTS)][1]
        await client.post(f"/_sandbox/tenants/{revoke_tenant}/revoke-tokens")

    async def body(engine) -> None:
        await race_until_quiet(
            engine,
            engine_settings,
            [company for company, _, _ in receivers],
            control_url=sandbox.url,
            chaos=chaos,
            deadline_s=QUIET_DEADLINE_S,
        )

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
    by_status = count_by_status(rows)
    assert set(by_status) <= {"synced", "failed"}, f"not quiet after {QUIET_DEADLINE_S}s: {by_status}"
    assert all(r["last_error_message"] for r in rows if r["status"] == "failed")

    faults_seen = 0
    for _company, tenant, mode in receivers:
        info = sandbox.inspect(tenant)
        faults_seen += sum(info["faults"]["counts"].values())
        markers = info["markers"]
        for kind, counts in markers.items():
            dups = {m.split("=", 1)[-1]: n for m, n in counts.items() if n > 1}
            assert not dups, f"duplicates at {tenant} {kind}: {routing_history(db, list(dups)[:3])}"
        delivered = (
            markers["bookings"] if mode == "booking" else {k.split("=", 1)[1]: v for k, v in markers["jobs"].items()}
        )
        synced = {str(r["id"]) for r in rows if r["tenant_id"] == tenant and r["status"] == "synced"}
        failed = {str(r["id"]) for r in rows if r["tenant_id"] == tenant and r["status"] == "failed"}
        assert synced <= set(delivered), "a synced routing has no record at the provider"
        assert set(delivered) - synced <= failed, "a record exists at the provider for an unsynced routing"
        assert len(synced) + len(failed) == PER_TENANT  # lost = 0
    assert faults_seen > 50  # the mix really happened
