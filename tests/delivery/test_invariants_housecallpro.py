"""The invariant for Housecall Pro: under a seeded mix of faults (5xx, commit-then-fail with a status or a dropped
connection, timeouts that commit, 429 storms with and without Retry-After), with batches racing each other and
reconcile running in between, every routing ends synced exactly once at Housecall Pro (0 duplicate leads/jobs,
0 lost), or failed with a message. Housecall Pro has no idempotency keys: the marker tag and the lookup do it."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import pytest
from sqlalchemy import text

from tests.support.delivery import run
from tests.support.housecallpro import HcpSandbox, hcp, hcp_sandbox_url  # noqa: F401
from tests.support.housecallpro_client import add_hcp_receiver, hcp_delivered
from tests.support.invariants import count_by_status, fault_mix, race_until_quiet
from tests.support.invariants import routing_history as _history
from tests.support.invariants import routing_state as _state
from tests.support.world import add_routings

ACCOUNTS = 5
PER_ACCOUNT = 100
QUIET_DEADLINE_S = 300  # three requests per delivery (ServiceTitan bookings take one), on a shared 2-core machine


@pytest.mark.parametrize("seed", [11, 23, 47])
def test_exactly_once_under_faults(db, database_url, engine_settings, hcp: HcpSandbox, world, seed: int) -> None:  # noqa: F811
    rng = random.Random(seed)
    receivers: list[tuple[uuid.UUID, str, str]] = []
    for i in range(ACCOUNTS):
        mode = "job" if i % 3 == 2 else "lead"
        company, account = add_hcp_receiver(db, hcp, mode=mode)
        receivers.append((company, account.company_id, mode))
        hcp.put_faults(account.company_id, **fault_mix(seed, i))
        add_routings(db, world, company, PER_ACCOUNT)

    async def chaos(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(0.5)
        storm = receivers[rng.randrange(ACCOUNTS)][1]
        await client.post(f"/_sandbox/accounts/{storm}/storm", json={"seconds": 0.5, "retry_after": 1})
        await asyncio.sleep(0.7)
        silent = receivers[rng.randrange(ACCOUNTS)][1]  # 429s that name no wait: backoff
        await client.post(f"/_sandbox/accounts/{silent}/storm", json={"seconds": 0.5, "retry_after_header": False})

    async def body(engine) -> None:
        await race_until_quiet(
            engine,
            engine_settings,
            [company for company, _, _ in receivers],
            control_url=hcp.url,
            chaos=chaos,
            deadline_s=QUIET_DEADLINE_S,
            tolerate_db_errors=True,
        )

    # a pool that leaves room on a database server other sessions share
    run(database_url, body, pool_size=20, max_overflow=5, pool_timeout=60)

    with db.connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT r.id, r.status, r.external_id, r.last_error_message, c.account_id FROM job_routings r "
                    "JOIN provider_connections c ON c.company_id = r.receiving_company_id"
                )
            )
            .mappings()
            .all()
        )
    by_status = count_by_status(rows)
    open_ids = [str(r["id"]) for r in rows if r["status"] not in ("synced", "failed")]
    assert set(by_status) <= {"synced", "failed"}, (
        f"not quiet after {QUIET_DEADLINE_S}s: {by_status}\n{_state(db, open_ids[:3])}\n{_history(db, open_ids[:3])}"
    )
    assert all(r["last_error_message"] for r in rows if r["status"] == "failed")
    failed_ids = [str(r["id"]) for r in rows if r["status"] == "failed"]
    assert by_status.get("synced", 0) >= 0.9 * ACCOUNTS * PER_ACCOUNT, _state(db, failed_ids[:5])  # faults ≠ failures

    faults_seen = 0
    for _company, account_id, mode in receivers:
        info = hcp.inspect(account_id)
        faults_seen += sum(info["faults"]["counts"].values())
        dups = {kind: found for kind, found in info["duplicates"].items() if found}
        assert not dups, f"duplicates at {account_id}: {dups} {_history(db, [m for f in dups.values() for m in f][:3])}"
        delivered = hcp_delivered(hcp, account_id, mode)
        synced = {str(r["id"]) for r in rows if r["account_id"] == account_id and r["status"] == "synced"}
        failed = {str(r["id"]) for r in rows if r["account_id"] == account_id and r["status"] == "failed"}
        assert synced <= set(delivered), "a synced routing has no record at Housecall Pro"
        assert set(delivered) - synced <= failed, "a record exists at Housecall Pro for an unsynced routing"
        assert len(synced) + len(failed) == PER_ACCOUNT  # lost = 0
        external = {str(r["id"]): r["external_id"] for r in rows if r["account_id"] == account_id}
        assert all(external[m] for m in synced)
    assert faults_seen > 50  # the mix really happened
