"""The routing queries the API and `si` share (integration_core/operations/routings.py), the one retry filter
(integration_core/delivery/retry.py) and the one definition of "oldest pending" (delivery/monitoring.py), on a
real database."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text

from integration_core.db.engine import session_scope
from integration_core.delivery import monitoring
from integration_core.delivery.retry import failed_matching, retry_failed
from integration_core.domain import RoutingStatus
from integration_core.errors import InvalidInput, NotFound
from integration_core.operations import admin
from integration_core.operations.routings import get_routing, list_routings, routing_statuses, routings_page
from integration_core.settings import Settings
from tests.support.config import DEAD_URL, with_settings
from tests.support.operator import receiver, set_status
from tests.support.world import World, add_routings


def _age(db: Engine, ids: list[uuid.UUID], *, routed_ago_s: int, next_attempt_in_s: int = 0) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE job_routings SET created_at = now() - make_interval(secs => :ago), "
                "next_attempt_at = now() + make_interval(secs => :next) WHERE id = ANY(:ids)"
            ),
            {"ago": routed_ago_s, "next": next_attempt_in_s, "ids": ids},
        )


def test_oldest_pending_is_the_oldest_routing_due_now(db: Engine, world: World, settings: Settings) -> None:
    """Due now = pending or needs_reconcile with its next attempt time come; aged from when it was routed. A
    routing backing off after an error waits by design and does not count; one awaiting its lookup does."""
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    b = receiver(db, "Beta Electric", tenant_id="502")
    c = receiver(db, "Gamma HVAC", tenant_id="503")
    pending_due, backing_off, reconcile_due, synced_old = add_routings(db, world, a, 4)
    _age(db, [pending_due], routed_ago_s=300)
    _age(db, [backing_off], routed_ago_s=3600, next_attempt_in_s=600)
    set_status(db, [reconcile_due], RoutingStatus.needs_reconcile)
    _age(db, [reconcile_due], routed_ago_s=900)
    set_status(db, [synced_old], RoutingStatus.synced)
    _age(db, [synced_old], routed_ago_s=7200)
    [b_due] = add_routings(db, world, b, 1)
    _age(db, [b_due], routed_ago_s=60)
    [c_waiting] = add_routings(db, world, c, 1)
    _age(db, [c_waiting], routed_ago_s=5000, next_attempt_in_s=300)  # nothing due at C

    with session_scope(db) as session:
        ages = monitoring.oldest_due_ages(session)
        assert set(ages) == {a, b}
        assert 900 <= ages[a] < 1200 and 60 <= ages[b] < 360
        assert monitoring.oldest_due_pending_age(session) == ages[a]  # the asset check's figure
        assert monitoring.oldest_due_ages(session, company_id=b) == {b: pytest.approx(ages[b], abs=5)}
        stats = admin.queue_stats(session, with_settings(settings, dagster_webserver_url=DEAD_URL))
    by_name = {x.company_name: x for x in stats.companies}
    # queue statistics and `si status` say the same: the same function
    assert by_name["Alpha Plumbing"].oldest_pending_age_seconds == pytest.approx(ages[a], abs=5)
    assert by_name["Beta Electric"].oldest_pending_age_seconds == pytest.approx(ages[b], abs=5)
    assert by_name["Gamma HVAC"].oldest_pending_age_seconds is None
    assert stats.oldest_pending_age_seconds == pytest.approx(ages[a], abs=5)
    assert by_name["Alpha Plumbing"].due_now == 2 and by_name["Gamma HVAC"].due_now == 0
    assert [x.company_name for x in stats.companies][:2] == ["Alpha Plumbing", "Beta Electric"]

    with session_scope(db) as session:
        assert monitoring.oldest_due_pending_age(session) is not None
        session.execute(text("UPDATE job_routings SET next_attempt_at = now() + interval '1 hour'"))
        assert monitoring.oldest_due_ages(session) == {}
        assert monitoring.oldest_due_pending_age(session) is None


def test_list_page_and_get_share_one_query(db: Engine, world: World) -> None:
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    b = receiver(db, "Beta Electric", tenant_id="502")
    ra = add_routings(db, world, a, 5)
    rb = add_routings(db, world, b, 2)
    set_status(db, ra[:2], RoutingStatus.failed, error_code="validation_error")
    set_status(db, ra[2:3], RoutingStatus.failed, error_code="not_found")
    with session_scope(db) as session:
        newest_first = list_routings(session, limit=100)
        assert [r.id for r in newest_first] == list(reversed(ra + rb))
        assert newest_first[0].receiving_company_name == "Beta Electric"
        failed = list_routings(session, status=RoutingStatus.failed, company_id=a, error_code="validation_error")
        assert {r.id for r in failed} == set(ra[:2])
        page = routings_page(session, limit=2, offset=1, status=RoutingStatus.failed)
        assert page.total == 3 and [r.id for r in page.items] == [ra[1], ra[0]]
        assert routings_page(session, limit=10, offset=0, company_id=b).total == 2
        detail = get_routing(session, ra[0])
        assert detail.id == ra[0] and detail.status == "failed" and detail.attempts_log == []
        missing = uuid.uuid4()
        with pytest.raises(NotFound, match=str(missing)):
            get_routing(session, missing)
        assert routing_statuses(session, [ra[0], ra[4], missing]) == {ra[0]: "failed", ra[4]: "pending"}


def test_what_a_retry_would_take_is_what_it_takes(db: Engine, world: World) -> None:
    """`si routings retry` counts and confirms with `failed_matching`, then retries: one filter, in SQL."""
    a = receiver(db, "Alpha Plumbing", tenant_id="501")
    b = receiver(db, "Beta Electric", tenant_id="502")
    ra = add_routings(db, world, a, 4)
    rb = add_routings(db, world, b, 2)
    set_status(db, ra[:3], RoutingStatus.failed, error_code="validation_error")
    set_status(db, rb, RoutingStatus.failed, error_code="validation_error")
    set_status(db, [ra[3]], RoutingStatus.synced)
    with session_scope(db) as session:
        with pytest.raises(InvalidInput):
            failed_matching(session)
        assert failed_matching(session, routing_ids=[ra[0], ra[3], rb[0]]) == [ra[0], rb[0]]  # oldest first
        by_company = failed_matching(session, company_id=a, error_code="validation_error")
        assert by_company == ra[:3]
        assert failed_matching(session, error_code="other") == []
        assert routing_statuses(session, ra[:3]) == dict.fromkeys(ra[:3], "failed")  # nothing changed
        retried = retry_failed(session, company_id=a, error_code="validation_error", actor="test")
        assert sorted(retried) == sorted(by_company)
        assert failed_matching(session, company_id=a, error_code="validation_error") == []
        assert failed_matching(session, error_code="validation_error") == rb
