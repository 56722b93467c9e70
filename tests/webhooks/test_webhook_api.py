"""The webhook endpoints over loopback against real PostgreSQL: verify, store, acknowledge; apply separately."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from integration_core.api.app import create_app
from integration_core.local.http_server import serve_in_thread
from integration_core.settings import Settings
from integration_core.webhooks.signing import sign
from tests.support.sandbox import SandboxHandle
from tests.support.webhooks import (
    GENERIC_SECRET,
    HCP_SECRET,
    ST_SECRET,
    apply,
    configure,
    connection_id,
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
from tests.support.world import add_receiver

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


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


def _job(job_id: int, status: str, modified: datetime, *, booking_id: int | None = None) -> dict[str, object]:
    return {
        "id": job_id,
        "jobNumber": str(job_id),
        "jobStatus": status,
        "completedOn": st_time(modified) if status == "Completed" else None,
        "modifiedOn": st_time(modified),
        "bookingId": booking_id,
        "externalData": [],
    }


def _invoice(invoice_id: int, job_id: int, total: str, modified: datetime) -> dict[str, object]:
    return {"id": invoice_id, "total": total, "modifiedOn": st_time(modified), "job": {"id": job_id}}


def test_valid_signature_is_stored_then_applied(db, database_url, wh, wh_settings, world, receiver) -> None:
    company, conn = receiver
    rid = synced_routing(db, world, company, external_id="5001", refs={"booking_id": 5001})
    path = f"/webhooks/servicetitan?connection={conn}"
    job = post_signed(wh, path, st_event("Job", "Completed", _job(9001, "Completed", T0, booking_id=5001)), ST_SECRET)
    inv = post_signed(wh, path, st_event("Invoice", "Created", _invoice(9101, 9001, "480.50", T0)), ST_SECRET)
    assert job.status_code == 200 and job.json()["status"] == "stored", job.text
    assert inv.status_code == 200 and inv.json()["status"] == "stored", inv.text
    stored = inbox(db)
    assert [e["status"] for e in stored] == ["received", "received"]
    assert stored[0]["event_type"] == "Job.Completed" and stored[0]["company_id"] == company
    # stored is not applied: the routing has not moved yet
    assert routing(db, rid)["external_status"] is None

    summary = apply(database_url, wh_settings)
    assert (summary.applied, summary.unmatched, summary.errors) == (2, 0, 0)
    row = routing(db, rid)
    assert row["external_status"] == "completed" and row["revenue"] == Decimal("480.50")
    assert row["completed_at"] == T0 and row["job_status"] == "completed"
    assert row["external_refs"]["job_id"] == 9001 and row["external_refs"]["status_source"] == "job"
    assert [e["status"] for e in inbox(db)] == ["applied", "applied"]
    # applying again finds nothing to do
    assert apply(database_url, wh_settings).events == 0


def test_wrong_or_missing_signature_is_refused_counted_and_not_stored(db, database_url, wh, world, receiver) -> None:
    company, conn = receiver
    rid = synced_routing(db, world, company, external_id="5002")
    path = f"/webhooks/servicetitan?connection={conn}"
    event = st_event("Booking", "Updated", {"id": 5002, "status": "Dismissed", "modifiedOn": st_time(T0)})
    wrong = post_signed(wh, path, event, "not-the-secret-0123456789abcdef")
    missing = post_signed(wh, path, event, None)
    hex_instead = post_signed(wh, path, event, ST_SECRET, encoding="hex")  # configured: base64
    unknown = post_signed(wh, f"/webhooks/servicetitan?connection={uuid.uuid4()}", event, ST_SECRET)
    no_connection = post_signed(wh, "/webhooks/servicetitan", event, ST_SECRET)
    other_provider = post_signed(wh, f"/webhooks/housecallpro?connection={conn}", event, ST_SECRET)
    for r in (wrong, missing, hex_instead, unknown, no_connection, other_provider):
        assert r.status_code == 401, r.text
        assert "5002" not in r.text
    assert inbox(db) == []
    assert rejections(db) == {"bad_signature": 2, "missing_signature": 1, "unknown_connection": 3}
    with db.connect() as c:
        columns = {
            r[0]
            for r in c.execute(
                text("SELECT column_name FROM information_schema.columns WHERE table_name = 'webhook_rejections'")
            )
        }
        keys = {r[0] for r in c.execute(text("SELECT connection_key FROM webhook_rejections"))}
    assert not columns & {"body", "payload"}
    assert keys == {str(conn), ""}  # a connection id nobody has is not written down
    row = routing(db, rid)
    assert row["external_status"] is None


def test_the_same_event_twice_is_stored_and_applied_once(db, database_url, wh, wh_settings, world, receiver) -> None:
    company, conn = receiver
    rid = synced_routing(db, world, company, external_id="5003")
    path = f"/webhooks/servicetitan?connection={conn}"
    event = st_event("Booking", "Updated", {"id": 5003, "status": "Accepted", "modifiedOn": st_time(T0)})
    first = post_signed(wh, path, event, ST_SECRET)
    again = post_signed(wh, path, event, ST_SECRET)  # the provider retries: same eventId
    assert first.json()["status"] == "stored" and again.json()["status"] == "duplicate"
    # no event id: the body's hash is the key
    bare = {k: v for k, v in event.items() if k != "eventId"}
    assert post_signed(wh, path, bare, ST_SECRET).json()["status"] == "stored"
    assert post_signed(wh, path, bare, ST_SECRET).json()["status"] == "duplicate"
    assert len(inbox(db)) == 2
    summary = apply(database_url, wh_settings)
    assert summary.applied == 2 and summary.changed == 1  # the second says what the first said
    before = routing(db, rid)
    assert before["external_status"] == "accepted"
    # replaying every event changes nothing
    with db.begin() as c:
        c.execute(text("UPDATE webhook_events SET status = 'received'"))
    assert apply(database_url, wh_settings).changed == 0
    assert routing(db, rid) == before


def test_an_older_event_after_a_newer_one_does_not_regress(db, database_url, wh, wh_settings, world, receiver) -> None:
    company, conn = receiver
    rid = synced_routing(db, world, company, external_id="9002", kind="job", refs={"job_id": 9002})
    path = f"/webhooks/servicetitan?connection={conn}"
    newer = st_event("Job", "Completed", _job(9002, "Completed", T0 + timedelta(minutes=5)))
    older = st_event("Job", "Updated", _job(9002, "InProgress", T0))
    old_invoice = st_event("Invoice", "Created", _invoice(9102, 9002, "100.00", T0 + timedelta(minutes=5)))
    new_invoice = st_event("Invoice", "Updated", _invoice(9102, 9002, "150.00", T0 + timedelta(minutes=9)))
    for event in (newer, new_invoice):
        assert post_signed(wh, path, event, ST_SECRET).status_code == 200
    apply(database_url, wh_settings)
    for event in (older, old_invoice):  # delivered late (retries): older than what the routing has
        assert post_signed(wh, path, event, ST_SECRET).status_code == 200
    summary = apply(database_url, wh_settings)
    assert summary.applied == 2 and summary.changed == 0
    row = routing(db, rid)
    assert row["external_status"] == "completed" and row["revenue"] == Decimal("150.00")
    assert row["completed_at"] == T0 + timedelta(minutes=5)


def test_unknown_record_is_kept_as_unmatched_and_requeued_when_it_becomes_known(
    db, database_url, wh, wh_settings, world, receiver
) -> None:
    company, conn = receiver
    rid = synced_routing(db, world, company, external_id="5004")
    path = f"/webhooks/servicetitan?connection={conn}"
    # the invoice of job 9004 arrives before anything tells us job 9004 came from our booking 5004
    post_signed(wh, path, st_event("Invoice", "Created", _invoice(9104, 9004, "75.25", T0)), ST_SECRET)
    post_signed(wh, path, st_event("Job", "Updated", _job(7777, "Scheduled", T0)), ST_SECRET)  # never ours
    first = apply(database_url, wh_settings)
    assert first.unmatched == 2
    assert [e["status"] for e in inbox(db)] == ["unmatched", "unmatched"]
    post_signed(wh, path, st_event("Job", "Completed", _job(9004, "Completed", T0, booking_id=5004)), ST_SECRET)
    second = apply(database_url, wh_settings)
    assert second.requeued == 1 and second.applied == 2
    row = routing(db, rid)
    assert row["external_status"] == "completed" and row["revenue"] == Decimal("75.25")
    assert [e["status"] for e in inbox(db)] == ["applied", "unmatched", "applied"]


def test_a_batch_is_applied_in_the_providers_order_not_the_order_of_arrival(
    db, database_url, wh, wh_settings, world, receiver
) -> None:
    company, conn = receiver
    rid = synced_routing(db, world, company, external_id="5006")
    path = f"/webhooks/servicetitan?connection={conn}"
    # the provider retried the job's first event: its invoice (later) arrives before it (earlier), same batch
    invoice = st_event("Invoice", "Created", _invoice(9106, 9006, "64.00", T0 + timedelta(minutes=9)))
    job = st_event("Job", "Completed", _job(9006, "Completed", T0 + timedelta(minutes=5), booking_id=5006))
    for event in (invoice, job):
        assert post_signed(wh, path, event, ST_SECRET).status_code == 200
    summary = apply(database_url, wh_settings)
    assert (summary.applied, summary.unmatched, summary.requeued, summary.errors) == (2, 0, 0, 0)
    row = routing(db, rid)
    assert row["external_status"] == "completed" and row["revenue"] == Decimal("64.00")
    assert [e["status"] for e in inbox(db)] == ["applied", "applied"]


def test_oversize_and_malformed_bodies_are_4xx_and_store_nothing(db, wh, receiver) -> None:
    _company, conn = receiver
    path = f"/webhooks/servicetitan?connection={conn}"
    big = b'{"eventType": "Job.Updated", "data": {"id": 1}, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    assert post_signed(wh, path, big, ST_SECRET).status_code == 413
    malformed = post_signed(wh, path, b'{"eventType": "Job.Updated", ', ST_SECRET)
    assert malformed.status_code == 400, malformed.text
    wrong_shape = post_signed(wh, path, {"eventType": "Job.Updated", "data": "nope"}, ST_SECRET)
    assert wrong_shape.status_code == 422 and wrong_shape.json()["detail"][0]["loc"] == ["body", "data"]
    not_object = post_signed(wh, path, b"[1, 2]", ST_SECRET)
    assert not_object.status_code == 422
    assert inbox(db) == []


def test_database_down_is_503_and_nothing_half_written(db, database_url, wh_settings, world, receiver) -> None:
    company, conn = receiver
    synced_routing(db, world, company, external_id="5005")
    role = f"si_wh_{uuid.uuid4().hex[:8]}"
    with db.begin() as c:
        c.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'))
    down = create_engine(make_url(database_url).set(username=role), pool_pre_ping=True)
    try:
        with serve_in_thread(create_app(wh_settings, engine=down)) as url, httpx.Client(base_url=url) as c:
            event = st_event("Booking", "Updated", {"id": 5005, "status": "Accepted", "modifiedOn": st_time(T0)})
            r = post_signed(c, f"/webhooks/servicetitan?connection={conn}", event, ST_SECRET)
            assert r.status_code == 503 and r.headers["Retry-After"]
            assert inbox(db) == [] and rejections(db) == {}
            # the provider retries once the database is back: stored exactly once
            with db.begin() as admin:
                admin.execute(text(f'ALTER ROLE "{role}" CONNECTION LIMIT -1'))
                admin.execute(text(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"'))
            again = post_signed(c, f"/webhooks/servicetitan?connection={conn}", event, ST_SECRET)
            assert again.status_code == 200, again.text
            assert len(inbox(db)) == 1
    finally:
        down.dispose()
        with db.begin() as c:
            c.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"'))
            c.execute(text(f'DROP ROLE "{role}"'))


def test_timestamp_header_is_signed_and_checked(db, database_url, wh, wh_settings, world, sandbox) -> None:
    """A connection configured like Housecall Pro's default (hex, `Api-Timestamp` signed with the body)."""
    company, _tenant = add_receiver(db, sandbox)
    conn = connection_id(db, company)
    configure(
        db,
        conn,
        HCP_SECRET,
        signature_header="Api-Signature",
        signature_encoding="hex",
        timestamp_header="Api-Timestamp",
    )
    rid = synced_routing(db, world, company, external_id="5007")
    path = f"/webhooks/servicetitan?connection={conn}"
    event = st_event("Booking", "Updated", {"id": 5007, "status": "Dismissed", "modifiedOn": st_time(T0)})
    common = {"header": "Api-Signature", "encoding": "hex", "timestamp_header": "Api-Timestamp"}
    now = str(int(time.time()))
    stale = post_signed(wh, path, event, HCP_SECRET, timestamp=str(int(time.time()) - 3600), **common)  # type: ignore[arg-type]
    unsigned_ts = post_signed(wh, path, event, HCP_SECRET, **common)  # type: ignore[arg-type]
    body = json.dumps(event).encode()
    replayed = wh.post(  # a signature of the body alone, under a fresh timestamp: not valid
        path,
        content=body,
        headers={"Api-Signature": sign(HCP_SECRET, body), "Api-Timestamp": now, "Content-Type": "application/json"},
    )
    assert [r.status_code for r in (stale, unsigned_ts, replayed)] == [401, 401, 401]
    ok = post_signed(wh, path, event, HCP_SECRET, timestamp=now, **common)  # type: ignore[arg-type]
    assert ok.status_code == 200, ok.text
    assert rejections(db) == {"stale_timestamp": 1, "missing_timestamp": 1, "bad_signature": 1}
    apply(database_url, wh_settings)
    assert routing(db, rid)["external_status"] == "dismissed" and routing(db, rid)["job_status"] == "canceled"


def test_generic_payload_with_header_or_body_signature(db, database_url, wh, wh_settings, world, receiver) -> None:
    company, _conn = receiver
    rid = synced_routing(db, world, company, external_id="5006")
    payload = {
        "provider": "servicetitan",  # without ?connection=: the provider whose routings it may touch
        "event_type": "job.completed",
        "external_id": "5006",
        "data": {"status": "completed", "revenue": 99.5, "completed_at": "2026-12-01T12:00:00Z"},
        "timestamp": "2026-12-01T12:00:00Z",
    }
    r = post_signed(wh, "/webhooks/generic", payload, GENERIC_SECRET, header="X-Webhook-Signature", encoding="hex")
    assert r.status_code == 200 and r.json()["status"] == "stored", r.text
    # the old system's in-body signature: HMAC of the payload without it, compact JSON, sorted keys
    second = {**payload, "event_type": "job.paid", "data": {"revenue": 120}, "timestamp": "2026-12-01T12:05:00Z"}
    canonical = json.dumps(second, separators=(",", ":"), sort_keys=True).encode()
    signed = {**second, "signature": sign(GENERIC_SECRET, canonical)}
    assert wh.post("/webhooks/generic", json=signed).json()["status"] == "stored"
    forged = {**second, "signature": sign("wrong-secret-0123456789", canonical)}
    assert wh.post("/webhooks/generic", json=forged).status_code == 401
    bad_status = {**payload, "data": {"status": "finished"}}
    r = post_signed(wh, "/webhooks/generic", bad_status, GENERIC_SECRET, header="X-Webhook-Signature", encoding="hex")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "data", "status"]
    apply(database_url, wh_settings)
    row = routing(db, rid)
    assert row["external_status"] == "completed" and row["revenue"] == Decimal("120.00")
