"""`apply_update`, the one write path of the status pull and of webhook events: a lead's (or booking's) own status
never overwrites the status read from the job it was converted into, whatever order the two are seen in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from integration_core.db.engine import session_scope
from integration_core.delivery.updates import apply_update
from integration_core.providers.base import ExternalUpdate
from integration_core.referrals.directory import create_company
from integration_core.schemas import CompanyCreate
from tests.support.delivery import run
from tests.support.world import add_routings

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("own_kind", ["lead", "booking"])
def test_the_converted_job_speaks_for_the_record_it_came_from(db, database_url, world, own_kind: str) -> None:
    with session_scope(db) as session:
        receiver = create_company(session, CompanyCreate(name="Receiver", service_zip_codes=["90210"]), actor="test")
        receiver_id = receiver.id
    [routing] = add_routings(db, world, receiver_id, 1)
    with db.begin() as conn:
        conn.execute(
            text("UPDATE job_routings SET status = 'synced', external_id = 'rec-1', synced_at = now() WHERE id = :id"),
            {"id": routing},
        )

    job_update = ExternalUpdate(
        kind="job", external_id="job-9", external_status="scheduled", modified_on=T0, marker=routing
    )
    # the lead/booking itself says "converted", observed later than the job's status
    own_update = ExternalUpdate(
        kind=own_kind,  # type: ignore[arg-type]
        external_id="rec-1",
        external_status="converted",
        modified_on=T0 + timedelta(minutes=5),
        marker=routing,
    )

    async def body(engine) -> list[str]:  # the outcomes, for a failure message
        results: list[str] = []
        for u in (job_update, own_update):
            async with engine.begin() as conn:
                results.append((await apply_update(conn, receiver_id, u)).outcome)
        return results

    run(database_url, body)
    with db.connect() as conn:
        status, refs = conn.execute(
            text("SELECT external_status, external_refs FROM job_routings WHERE id = :id"), {"id": routing}
        ).one()
    assert status == "scheduled"
    assert refs["status_source"] == "job"
