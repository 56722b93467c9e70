"""The webhook sensor applies the inbox; the asset check fails when events wait too long."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg
import pytest
from sqlalchemy import text

from pipelines.definitions import defs
from pipelines.resources import IntegrationResource
from pipelines.webhooks import webhook_inbox_applied, webhook_inbox_sensor
from tests.support.config import TEST_SECRET_KEY
from tests.support.webhooks import inbox, routing, st_event, st_time, synced_routing
from tests.support.world import add_receiver


@pytest.fixture()
def integration(database_url: str) -> IntegrationResource:
    return IntegrationResource(database_url=database_url, secret_key=TEST_SECRET_KEY)


@pytest.fixture()
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _store(db, company, event) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO webhook_events (provider, company_id, dedup_key, event_type, external_id, payload) "
                "VALUES ('servicetitan', :c, :k, :t, :x, CAST(:p AS jsonb))"
            ),
            {
                "c": company,
                "k": event["eventId"],
                "t": event["eventType"],
                "x": str(event["data"]["id"]),
                "p": json.dumps(event),
            },
        )


def _check(integration: IntegrationResource) -> dg.AssetCheckResult:
    result = webhook_inbox_applied(integration=integration)
    assert isinstance(result, dg.AssetCheckResult)
    return result


def test_definitions_carry_the_sensor_and_the_check() -> None:
    assert defs.resolve_sensor_def("webhook_inbox_sensor").minimum_interval_seconds == 4
    assert defs.resolve_job_def("webhook_checks_job") is not None


def test_sensor_applies_the_inbox(db, world, sandbox, integration, instance) -> None:
    from datetime import UTC, datetime

    company, _tenant = add_receiver(db, sandbox)
    rid = synced_routing(db, world, company, external_id="6001")
    _store(
        db,
        company,
        st_event("Booking", "Updated", {"id": 6001, "status": "Accepted", "modifiedOn": st_time(datetime.now(UTC))}),
    )
    result = webhook_inbox_sensor(dg.build_sensor_context(instance=instance), integration=integration)
    assert isinstance(result, dg.SkipReason) and "1 applied" in (result.skip_message or "")
    assert routing(db, rid)["external_status"] == "accepted"
    assert [e["status"] for e in inbox(db)] == ["applied"]


def test_check_fails_when_unapplied_events_are_older_than_the_threshold(db, world, sandbox, integration) -> None:
    company, _tenant = add_receiver(db, sandbox)
    assert _check(integration).passed
    _store(db, company, st_event("Booking", "Updated", {"id": 6002, "status": "Accepted"}))
    assert _check(integration).passed  # just arrived
    with db.begin() as conn:
        conn.execute(text("UPDATE webhook_events SET received_at = now() - interval '10 minutes'"))
    result = _check(integration)
    age = result.metadata["oldest_unapplied_age_s"].value
    assert not result.passed and isinstance(age, float) and age >= 600
