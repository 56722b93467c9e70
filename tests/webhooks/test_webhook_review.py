"""Review of issue 12: key rotation, ServiceTitan revenue over several invoices, the generic endpoint's trust
model, hostile timestamps, body-signature dedup, deterministic ordering at equal times."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from integration_core import crypto
from integration_core.domain import WebhookEventStatus
from integration_core.settings import Settings
from integration_core.webhooks.signing import SignatureError, SigningConfig, sign, verify
from tests.support.config import DEAD_URL, TEST_API_TOKEN, TEST_SECRET_KEY, with_settings
from tests.support.sandbox import SandboxHandle
from tests.support.webhooks import (
    GENERIC_SECRET,
    ST_SECRET,
    apply,
    inbox,
    post_signed,
    rejections,
    routing,
    st_event,
    st_time,
    st_webhook_receiver,
    synced_routing,
    webhook_api,
    webhook_settings,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NEW_KEY = "new-secret-key-0123456789abcdefghij"


@pytest.fixture()
def wh_settings(settings: Settings) -> Settings:
    return webhook_settings(settings)


@pytest.fixture()
def wh(db: Engine, wh_settings: Settings) -> Iterator[httpx.Client]:
    with webhook_api(db, wh_settings) as c:
        yield c


@pytest.fixture()
def receiver(db: Engine, sandbox: SandboxHandle) -> tuple[uuid.UUID, uuid.UUID]:
    return st_webhook_receiver(db, sandbox)


def _ring_settings(database_url: str, keys: str) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        API_TOKEN=TEST_API_TOKEN,
        SECRET_KEYS=keys,
        ENVIRONMENT="test",
        SERVICETITAN_SANDBOX_URL=DEAD_URL,
        DAGSTER_WEBSERVER_URL=DEAD_URL,
        WEBHOOK_APPLY_IN_API=False,
    )


def _booking_event(booking_id: int) -> dict[str, object]:
    return st_event("Booking", "Updated", {"id": booking_id, "status": "Accepted", "modifiedOn": st_time(T0)})


# -- 1. key rotation ---------------------------------------------------------------------------------------------


def test_secret_under_the_old_key_verifies_after_rotation_and_is_rewritten_with_the_new(
    db: Engine, database_url: str, world, receiver
) -> None:
    company, conn = receiver  # its webhook secret was written under TEST_SECRET_KEY
    synced_routing(db, world, company, external_id="6001")
    ring = _ring_settings(database_url, f"{NEW_KEY},{TEST_SECRET_KEY}")
    path = f"/webhooks/servicetitan?connection={conn}"
    with webhook_api(db, ring) as c:
        r = post_signed(c, path, _booking_event(6001), ST_SECRET)
        assert r.status_code == 200, r.text
        put = c.put(
            f"/api/admin/webhooks/endpoints/{conn}",
            json={"secret": ST_SECRET},
            headers={"Authorization": f"Bearer {TEST_API_TOKEN}"},
        )
        assert put.status_code == 200, put.text
    with db.connect() as c2:
        stored: str = c2.execute(text("SELECT secret_encrypted FROM webhook_endpoints")).scalar_one()
    assert crypto.decrypt(stored, NEW_KEY) == ST_SECRET  # written with the first key of the ring
    # the old key is no longer needed: a ring of the new key alone verifies
    only_new = _ring_settings(database_url, NEW_KEY)
    with webhook_api(db, only_new) as c:
        assert post_signed(c, path, _booking_event(6002), ST_SECRET).status_code == 200


def test_secret_no_key_of_the_ring_opens_is_401_not_500(db: Engine, database_url: str, receiver) -> None:
    _company, conn = receiver
    only_new = _ring_settings(database_url, NEW_KEY)
    with webhook_api(db, only_new) as c:
        r = post_signed(c, f"/webhooks/servicetitan?connection={conn}", _booking_event(6003), ST_SECRET)
    assert r.status_code == 401 and inbox(db) == []
    assert rejections(db) == {"secret_unreadable": 1}


# -- 2. ServiceTitan revenue over several invoices ---------------------------------------------------------------


def _invoice(invoice_id: int, job_id: int, total: str, modified: datetime, change: str = "Created") -> dict[str, Any]:
    data = {"id": invoice_id, "total": total, "modifiedOn": st_time(modified), "job": {"id": job_id}}
    return st_event("Invoice", change, data)


def _job_completed(job_id: int, at: datetime) -> dict[str, Any]:
    data = {
        "id": job_id,
        "jobStatus": "Completed",
        "completedOn": st_time(at),
        "modifiedOn": st_time(at),
        "externalData": [],
    }
    return st_event("Job", "Completed", data)


def test_a_job_with_two_invoices_gets_their_sum_never_one_invoice(
    db: Engine, database_url: str, wh, wh_settings, world, receiver
) -> None:
    company, conn = receiver
    rid = synced_routing(db, world, company, external_id="9201", kind="job", refs={"job_id": 9201})
    path = f"/webhooks/servicetitan?connection={conn}"
    assert post_signed(wh, path, _job_completed(9201, T0), ST_SECRET).status_code == 200
    assert post_signed(wh, path, _invoice(9301, 9201, "100.00", T0), ST_SECRET).status_code == 200
    apply(database_url, wh_settings)
    assert routing(db, rid)["revenue"] == Decimal("100.00")
    # the second invoice of the same job: the revenue is both, not the last one alone
    assert post_signed(wh, path, _invoice(9302, 9201, "50.00", T0 + timedelta(minutes=1)), ST_SECRET).status_code == 200
    apply(database_url, wh_settings)
    assert routing(db, rid)["revenue"] == Decimal("150.00")
    # the first invoice edited: its newest version counts, once
    edit = _invoice(9301, 9201, "120.00", T0 + timedelta(minutes=2), change="Updated")
    assert post_signed(wh, path, edit, ST_SECRET).status_code == 200
    apply(database_url, wh_settings)
    assert routing(db, rid)["revenue"] == Decimal("170.00")
    # an older version of the first invoice delivered late changes nothing
    late = _invoice(9301, 9201, "100.00", T0 - timedelta(minutes=1), change="Updated")
    assert post_signed(wh, path, late, ST_SECRET).status_code == 200
    apply(database_url, wh_settings)
    assert routing(db, rid)["revenue"] == Decimal("170.00")
    # a voided (deleted) invoice no longer counts
    void = _invoice(9302, 9201, "50.00", T0 + timedelta(minutes=3), change="Deleted")
    assert post_signed(wh, path, void, ST_SECRET).status_code == 200
    apply(database_url, wh_settings)
    assert routing(db, rid)["revenue"] == Decimal("120.00")
    assert routing(db, rid)["external_refs"]["revenue_source"] == "webhook_invoices"


# -- 3. the generic endpoint's trust model -----------------------------------------------------------------------


def _generic(provider: str, external_id: str, status: str = "completed") -> dict[str, object]:
    return {
        "provider": provider,
        "event_type": "job.updated",
        "external_id": external_id,
        "data": {"status": status},
        "timestamp": "2026-12-01T12:00:00Z",
    }


def _post_generic(client: httpx.Client, payload: dict[str, object], path: str = "/webhooks/generic") -> httpx.Response:
    return post_signed(client, path, payload, GENERIC_SECRET, header="X-Webhook-Signature", encoding="hex")


def test_generic_without_connection_changes_only_routings_of_the_named_provider(
    db: Engine, database_url: str, wh, wh_settings, world, receiver
) -> None:
    company, _conn = receiver  # a ServiceTitan connection
    rid = synced_routing(db, world, company, external_id="6101")
    other = _post_generic(wh, _generic("housecallpro", "6101", "canceled"))
    assert other.status_code == 200, other.text
    apply(database_url, wh_settings)
    assert routing(db, rid)["external_status"] is None  # a Housecall Pro event never moves a ServiceTitan routing
    assert [e["status"] for e in inbox(db)] == ["unmatched"]
    ok = _post_generic(wh, _generic("servicetitan", "6101"))
    assert ok.status_code == 200, ok.text
    apply(database_url, wh_settings)
    assert routing(db, rid)["external_status"] == "completed"
    unknown = _post_generic(wh, _generic("legacy-crm", "6101"))
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "provider"]


def test_generic_without_connection_is_refused_outside_development(
    db: Engine, wh_settings: Settings, world, receiver
) -> None:
    company, conn = receiver
    synced_routing(db, world, company, external_id="6102")
    production = with_settings(wh_settings, environment="production")
    with webhook_api(db, production) as c:
        r = _post_generic(c, _generic("servicetitan", "6102"))
        assert r.status_code == 401, r.text
        assert inbox(db) == [] and rejections(db) == {"connection_required": 1}
        # with its connection (signed with that connection's secret) it is taken
        signed = post_signed(
            c,
            f"/webhooks/generic?connection={conn}",
            _generic("servicetitan", "6102"),
            ST_SECRET,
            header="X-ServiceTitan-Signature",
        )
        assert signed.status_code == 200, signed.text


# -- review: hostile timestamps, body-signature replay, equal times ------------------------------------------------


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e300", "99999999999999999999", "-1e20"])
def test_a_timestamp_header_that_is_no_time_is_refused_not_an_error(raw: str) -> None:
    config = SigningConfig(secret=ST_SECRET, header="Sig", timestamp_header="Ts")
    body = b"{}"
    with pytest.raises(SignatureError) as caught:
        verify(config, body, sign(ST_SECRET, body, timestamp=raw), raw)
    assert caught.value.reason in ("bad_timestamp", "stale_timestamp")


def test_body_signed_generic_event_resent_with_other_whitespace_is_a_duplicate(db: Engine, wh, receiver) -> None:
    payload = _generic("servicetitan", "6201")
    canonical = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    signed = {**payload, "signature": sign(GENERIC_SECRET, canonical)}
    first = wh.post("/webhooks/generic", content=json.dumps(signed).encode())
    again = wh.post("/webhooks/generic", content=json.dumps(signed, indent=2).encode())  # same, re-spaced
    assert first.json()["status"] == "stored", first.text
    assert again.json()["status"] == "duplicate", again.text
    assert len(inbox(db)) == 1


def test_two_statuses_at_the_same_time_end_the_same_in_either_order(
    db: Engine, database_url: str, wh, wh_settings, world, receiver
) -> None:
    company, conn = receiver
    path = f"/webhooks/servicetitan?connection={conn}"

    def job(job_id: int, status: str) -> dict[str, object]:
        data = {"id": job_id, "jobStatus": status, "modifiedOn": st_time(T0), "externalData": []}
        return st_event("Job", "Updated", data)

    finals = []
    for job_id, order in ((9401, ("InProgress", "Canceled")), (9402, ("Canceled", "InProgress"))):
        rid = synced_routing(db, world, company, external_id=str(job_id), kind="job", refs={"job_id": job_id})
        for status in order:
            assert post_signed(wh, path, job(job_id, status), ST_SECRET).status_code == 200
            apply(database_url, wh_settings)
        finals.append(routing(db, rid)["external_status"])
    assert finals[0] == finals[1] == "canceled"


def test_inbox_states_are_the_domain_enum(db: Engine) -> None:
    with db.connect() as c:
        check = c.execute(
            text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ck_webhook_events_status_known'")
        ).scalar()
    assert check is not None
    for state in WebhookEventStatus:
        assert f"'{state.value}'" in check


def test_a_database_busy_mid_apply_leaves_the_event_queued_without_spending_attempts(
    db: Engine, database_url: str, wh, wh_settings, world, receiver
) -> None:
    """The routing is locked by someone else and the applier's lock_timeout strikes: that is the database's
    trouble, not the event's; it stays `received` with no attempt spent (never `error` after a few such runs)."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from integration_core.webhooks.apply import apply_inbox

    company, conn = receiver
    rid = synced_routing(db, world, company, external_id="6301")
    assert (
        post_signed(wh, f"/webhooks/servicetitan?connection={conn}", _booking_event(6301), ST_SECRET).status_code == 200
    )
    settings = with_settings(wh_settings, webhook_max_apply_attempts=2)

    async def apply_with_lock_timeout() -> int:
        engine = create_async_engine(database_url, connect_args={"options": "-c lock_timeout=200"})
        try:
            return (await apply_inbox(engine, settings)).deferred
        finally:
            await engine.dispose()

    with db.connect() as holder:
        holder.execute(text("SELECT 1 FROM job_routings WHERE id = :id FOR UPDATE"), {"id": rid})
        assert [asyncio.run(apply_with_lock_timeout()) for _ in range(3)] == [1, 1, 1]
        event = inbox(db)[0]
        assert (event["status"], event["attempts"], event["last_error"]) == ("received", 0, None)
        holder.rollback()
    apply(database_url, wh_settings)
    assert routing(db, rid)["external_status"] == "accepted"
    assert inbox(db)[0]["status"] == "applied"


def test_the_same_event_delivered_many_times_at_once_is_one_row(db: Engine, wh, receiver) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _company, conn = receiver
    event = _booking_event(6401)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: post_signed(wh, f"/webhooks/servicetitan?connection={conn}", event, ST_SECRET), range(8))
        )
    assert sorted(a.json()["status"] for a in answers) == ["duplicate"] * 7 + ["stored"]
    assert len(inbox(db)) == 1


def test_concurrent_appliers_apply_each_event_exactly_once(
    db: Engine, database_url: str, wh, wh_settings, world, receiver
) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from integration_core.webhooks.apply import apply_inbox

    company, conn = receiver
    for n in range(30):
        synced_routing(db, world, company, external_id=str(6500 + n))
        r = post_signed(wh, f"/webhooks/servicetitan?connection={conn}", _booking_event(6500 + n), ST_SECRET)
        assert r.status_code == 200
    settings = with_settings(wh_settings, webhook_apply_batch_size=4)

    async def main() -> list[int]:
        engines = [create_async_engine(database_url, pool_size=1, max_overflow=0) for _ in range(4)]
        try:
            results = await asyncio.gather(*(apply_inbox(e, settings) for e in engines))
            return [r.applied for r in results]
        finally:
            for e in engines:
                await e.dispose()

    applied = asyncio.run(main())
    assert sum(applied) == 30
    events = inbox(db)
    assert {e["status"] for e in events} == {"applied"} and {e["attempts"] for e in events} == {1}
