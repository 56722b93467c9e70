"""Operators see the inbox (admin API, `si webhooks`) and can replay it; webhook settings are write-only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from integration_core.cli.main import app as cli
from tests.support.api import serve_api
from tests.support.config import with_settings
from tests.support.webhooks import ST_SECRET, connection_id, post_signed, routing, st_event, st_time, synced_routing
from tests.support.world import add_receiver


@pytest.fixture()
def admin(db: Engine, settings) -> Iterator[httpx.Client]:
    with serve_api(db, with_settings(settings, webhook_apply_in_api=False)) as client:
        yield client


def test_admin_api_configures_shows_and_replays(db, database_url, admin, world, sandbox, monkeypatch) -> None:
    company, _tenant = add_receiver(db, sandbox)
    conn = connection_id(db, company)
    rid = synced_routing(db, world, company, external_id="8001")
    assert admin.get(f"/api/admin/webhooks/endpoints/{conn}").status_code == 404
    short = admin.put(f"/api/admin/webhooks/endpoints/{conn}", json={"secret": "short"})
    assert short.status_code == 422 and short.json()["detail"][0]["loc"][-1] == "secret"
    put = admin.put(f"/api/admin/webhooks/endpoints/{conn}", json={"secret": ST_SECRET})
    assert put.status_code == 200, put.text
    shown = admin.get(f"/api/admin/webhooks/endpoints/{conn}").json()
    assert shown["signature_header"] == "X-ServiceTitan-Signature" and shown["signature_encoding"] == "base64"
    assert shown["secret_set"] is True and ST_SECRET not in put.text + str(shown)
    with db.connect() as c:
        stored = c.execute(text("SELECT secret_encrypted FROM webhook_endpoints")).scalar_one()
        audit = c.execute(
            text("SELECT details::text FROM audit_log WHERE action = 'webhook_endpoint.configure'")
        ).scalar_one()
    assert ST_SECRET not in stored and stored.startswith("v1:") and ST_SECRET not in audit
    # no token: the admin routes refuse; the webhook route does not ask for one
    bare = httpx.Client(base_url=str(admin.base_url))
    assert bare.get("/api/admin/webhooks").status_code == 401
    event = st_event("Booking", "Updated", {"id": 8001, "status": "Accepted", "modifiedOn": st_time(datetime.now(UTC))})
    assert post_signed(bare, f"/webhooks/servicetitan?connection={conn}", event, ST_SECRET).status_code == 200
    assert (
        post_signed(bare, f"/webhooks/servicetitan?connection={conn}", event, "nope-nope-nope-nope").status_code == 401
    )
    post_signed(
        bare,
        f"/webhooks/servicetitan?connection={conn}",
        st_event("Job", "Updated", {"id": 1, "jobStatus": "Scheduled"}),
        ST_SECRET,
    )

    summary = admin.get("/api/admin/webhooks").json()
    assert summary["events"] == {"servicetitan": {"received": 2}} and summary["unapplied"] == 2
    assert summary["rejected_total"] == 1 and summary["rejected"][0]["reason"] == "bad_signature"
    events = admin.get("/api/admin/webhooks/events", params={"status": "received"}).json()
    assert len(events) == 2 and "payload" not in events[0]

    # si webhooks: the same inbox; replay --apply applies (the CLI reads the environment's settings)
    monkeypatch.setenv("SECRET_KEY", "test-secret-key-0123456789abcdef")
    runner = CliRunner()
    listed = runner.invoke(cli, ["webhooks", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert '"unapplied": 2' in listed.output
    replay = runner.invoke(cli, ["webhooks", "replay", "--status", "received"])
    assert replay.exit_code == 2  # only unmatched, error or applied
    ids = [str(e["id"]) for e in events]
    replayed = runner.invoke(cli, ["webhooks", "replay", *ids])
    assert replayed.exit_code == 0, replayed.output
    assert "2 event(s) queued again" in replayed.output and "1 unmatched" in replayed.output
    assert routing(db, rid)["external_status"] == "accepted"
    unmatched = admin.post("/api/admin/webhooks/replay", json={"status": "unmatched"})
    assert unmatched.json() == {"queued": 1}
    assert admin.post("/api/admin/webhooks/replay", json={}).status_code == 422
