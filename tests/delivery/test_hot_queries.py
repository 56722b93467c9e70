"""The hot queries (the sensor's `due_companies`, the run's `claim`): what they return, and that their plans walk
the due-routing indexes and stop early instead of reading and sorting every due row (real PostgreSQL)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from integration_core.delivery import claims, monitoring
from integration_core.delivery.claims import Claimed, _claim_statement, claim
from integration_core.delivery.monitoring import due_companies
from integration_core.domain import RoutingStatus
from integration_core.providers.base import DeliveryRequest
from tests.support.delivery import run
from tests.support.world import World

DUE_STATUSES = frozenset({RoutingStatus.pending, RoutingStatus.needs_reconcile})


def add_company(db: Engine, name: str, *, connection: str | None = "enabled") -> uuid.UUID:
    """A receiving company; `connection`: 'enabled', 'disabled' or None (none at all)."""
    with db.begin() as conn:
        company: uuid.UUID = conn.execute(
            text("INSERT INTO companies (name) VALUES (:n) RETURNING id"), {"n": name}
        ).scalar_one()
        if connection is not None:
            conn.execute(
                text(
                    "INSERT INTO provider_connections (company_id, account_id, settings, enabled) "
                    "VALUES (:c, :t, '{\"booking_provider_id\": 1}', :e)"
                ),
                {"c": company, "t": f"T-{name}", "e": connection == "enabled"},
            )
    return company


def add(
    db: Engine,
    world: World,
    company: uuid.UUID,
    n: int,
    *,
    status: str = "pending",
    age: timedelta = timedelta(minutes=5),
    spread: timedelta = timedelta(0),
) -> list[uuid.UUID]:
    """`n` routings of `company` in `status`, next attempt `age` ago (negative: in the future), the i-th one
    `spread` * i later; in insertion (sequence) order."""
    with db.begin() as conn:
        rows = (
            conn.execute(
                text(
                    """
                    WITH j AS (
                        INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone,
                                          created_by_company_id, created_by_technician_id)
                        SELECT 'Job ' || g, g || ' Elm St', 'Austin', 'TX', '78701', 'Owner ' || g, '5125550000',
                               :ref, :tech
                          FROM generate_series(1, :n) g
                        RETURNING id
                    ), numbered AS (SELECT id, row_number() OVER () AS i FROM j)
                    INSERT INTO job_routings (job_id, receiving_company_id, status, next_attempt_at, external_id,
                                              lease_owner, lease_expires_at)
                    SELECT id, :c, CAST(:s AS text), now() - :age + :spread * (i - 1),
                           CASE WHEN CAST(:s AS text) = 'synced' THEN 'ext-' || i END,
                           CASE WHEN CAST(:s AS text) = 'claimed' THEN 'someone' END,
                           CASE WHEN CAST(:s AS text) = 'claimed' THEN now() + interval '1 hour' END
                      FROM numbered ORDER BY i
                    RETURNING id, sequence
                    """
                ),
                {
                    "ref": world.referrer,
                    "tech": world.technician,
                    "n": n,
                    "c": company,
                    "s": status,
                    "age": age,
                    "spread": spread,
                },
            )
            .tuples()
            .all()
        )
    return [routing for routing, _ in sorted(rows, key=lambda r: r[1])]


def due(db: Engine, **kwargs: Any) -> list[monitoring.DueCompany]:
    with Session(db) as session:
        return due_companies(session, **kwargs)


# --- due_companies --------------------------------------------------------------------------------------------


def test_due_companies_longest_waiting_first_with_count(db, world) -> None:
    a = add_company(db, "A")
    b = add_company(db, "B")
    a_due = add(db, world, a, 5, age=timedelta(hours=3), spread=timedelta(minutes=1))
    add(db, world, a, 2, age=-timedelta(hours=1))  # in backoff: not due
    add(db, world, b, 2, age=timedelta(hours=1))
    add(db, world, b, 1, status="needs_reconcile", age=timedelta(minutes=1))  # awaiting a lookup: due
    for status in ("claimed", "synced", "failed", "no_integration"):  # not due, whatever their age
        add(db, world, b, 1, status=status, age=timedelta(days=1))

    got = due(db, limit=10)

    assert [(d.company_id, d.name, d.tenant_id, d.due) for d in got] == [(a, "A", "T-A", 5), (b, "B", "T-B", 3)]
    with db.connect() as conn:
        oldest_a = conn.execute(
            text("SELECT min(next_attempt_at) FROM job_routings WHERE id = ANY(:ids)"), {"ids": a_due}
        ).scalar_one()
    assert got[0].oldest_due_at == oldest_a
    assert got[0].oldest_due_at < got[1].oldest_due_at


def test_due_companies_needs_a_connection_that_is_enabled(db, world) -> None:
    enabled = add_company(db, "Enabled")
    disabled = add_company(db, "Disabled", connection="disabled")
    without = add_company(db, "Without", connection=None)
    for company in (enabled, disabled, without):
        add(db, world, company, 3, age=timedelta(hours=1))

    assert [d.company_id for d in due(db, limit=10)] == [enabled]


def test_due_companies_counts_needs_reconcile_alone_and_skips_companies_with_nothing_due(db, world) -> None:
    lookup = add_company(db, "Lookup")
    future = add_company(db, "Future")
    idle = add_company(db, "Idle")
    add(db, world, lookup, 2, status="needs_reconcile")
    add(db, world, future, 4, age=-timedelta(minutes=10))
    add(db, world, idle, 4, status="synced")

    got = due(db, limit=10)
    assert [(d.company_id, d.due) for d in got] == [(lookup, 2)]
    assert future not in {d.company_id for d in got} and idle not in {d.company_id for d in got}


def test_due_companies_limit_keeps_the_longest_waiting_and_the_count_is_capped(db, world) -> None:
    # skewed: two companies hold most of the due routings
    heavy = [add_company(db, f"Heavy {i}") for i in range(2)]
    light = [add_company(db, f"Light {i}") for i in range(6)]
    for i, company in enumerate(heavy):
        add(db, world, company, 40, age=timedelta(minutes=30 + i), spread=timedelta(seconds=1))
    for i, company in enumerate(light):
        add(db, world, company, 2, age=timedelta(hours=2 + i))  # Light 5 waited longest

    got = due(db, limit=3)
    assert [d.company_id for d in got] == [light[5], light[4], light[3]]

    everyone = due(db, limit=100, count_cap=25)
    assert [d.company_id for d in everyone] == [*reversed(light), heavy[1], heavy[0]]
    assert [d.due for d in everyone] == [2] * 6 + [25, 25]  # "at least 25"
    assert [d.due for d in due(db, limit=100)][-2:] == [40, 40]  # below the default cap: exact


# --- claim ----------------------------------------------------------------------------------------------------


def test_claim_takes_the_oldest_due_first_and_marks_lookups(db, database_url, world) -> None:
    company = add_company(db, "C")
    late = add(db, world, company, 3, age=timedelta(minutes=1))  # routed first, due last
    early = add(db, world, company, 3, age=timedelta(hours=1), spread=timedelta(seconds=1))
    lookup = add(db, world, company, 1, status="needs_reconcile", age=timedelta(minutes=30))
    add(db, world, company, 2, age=-timedelta(minutes=5))  # in backoff
    add(db, world, company, 2, status="claimed", age=timedelta(hours=2))  # someone else's, started
    reserved = add(db, world, company, 2, age=timedelta(hours=2))  # someone else's, leased and not written yet
    lapsed = add(db, world, company, 1, age=timedelta(hours=3))  # leased by someone whose lease ran out
    with db.begin() as conn:
        for ids, expires in ((reserved, "now() + interval '1 minute'"), (lapsed, "now() - interval '1 second'")):
            conn.execute(
                text(
                    f"UPDATE job_routings SET lease_owner = 'someone', lease_expires_at = {expires} WHERE id = ANY(:i)"
                ),
                {"i": ids},
            )
    add(db, world, company, 2, status="synced", age=timedelta(hours=2))
    other = add_company(db, "Other")
    add(db, world, other, 3, age=timedelta(hours=5))

    first = run(database_url, lambda e: claim(e, company, owner="run-1", limit=5, lease_seconds=60))
    assert {c.id for c in first} == {*lapsed, *early, *lookup}
    assert {c.id: c.lookup_required for c in first} == {**dict.fromkeys([*lapsed, *early], False), lookup[0]: True}
    assert all(c.request.referring_company_name == "Referrer Co" and c.request.city == "Austin" for c in first)

    rest = run(database_url, lambda e: claim(e, company, owner="run-2", limit=10, lease_seconds=60))
    assert {c.id for c in rest} == set(late)
    assert run(database_url, lambda e: claim(e, company, owner="run-3", limit=10, lease_seconds=60)) == []
    with db.connect() as conn:
        leased = dict(
            conn.execute(
                text(
                    "SELECT lease_owner || ':' || status, count(*) FROM job_routings WHERE lease_expires_at > now() "
                    "GROUP BY 1"
                )
            ).all()
        )
        receipts = dict(conn.execute(text("SELECT owner, cardinality(routing_ids) FROM routing_claims")).all())
    # the claim writes the lease only: the statuses are unchanged until the run writes to the routing
    assert leased == {
        "run-1:pending": 4,
        "run-1:needs_reconcile": 1,
        "run-2:pending": 3,
        "someone:claimed": 2,
        "someone:pending": 2,
    }
    assert receipts == {"run-1": 5, "run-2": 3}


def test_claim_builds_the_same_objects_as_their_constructors(db, database_url, world) -> None:
    """claim() fills the frozen dataclasses' dicts directly (claims._claimed): every field, nothing else."""
    for cls, names in claims._FAST_BUILD_FIELDS.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(names), cls
        assert not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__"), cls
    company = add_company(db, "C")
    add(db, world, company, 3, age=timedelta(minutes=10))
    got = run(database_url, lambda e: claim(e, company, owner="r", limit=10, lease_seconds=60))
    assert len(got) == 3
    with db.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text(
                    "SELECT r.id, r.lease_version, r.attempts, r.lookup_required, r.created_at, j.summary, j.street, "
                    "j.unit, j.city, j.state, j.zip_code, j.country, j.homeowner_name, j.homeowner_phone, "
                    "j.homeowner_email, j.category, c.name AS referrer FROM job_routings r "
                    "JOIN jobs j ON j.id = r.job_id JOIN companies c ON c.id = j.created_by_company_id "
                    "WHERE r.receiving_company_id = :c"
                ),
                {"c": company},
            ).mappings()
        }
    for c in got:
        r = rows[c.id]
        expected = Claimed(
            id=c.id,
            lease_version=r["lease_version"],
            attempts=r["attempts"],
            lookup_required=r["lookup_required"],
            request=DeliveryRequest(
                routing_id=c.id,
                summary=r["summary"],
                street=r["street"],
                unit=r["unit"],
                city=r["city"],
                state=r["state"],
                zip=r["zip_code"],
                country=r["country"],
                homeowner_name=r["homeowner_name"],
                homeowner_phone=r["homeowner_phone"],
                homeowner_email=r["homeowner_email"],
                category=r["category"],
                referring_company_name=r["referrer"],
                created_at=r["created_at"],
            ),
            deadline=c.deadline,
        )
        assert c == expected and hash(c) == hash(expected) and repr(c) == repr(expected)
        assert vars(c) == vars(expected) and vars(c.request) == vars(expected.request)
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.request.summary = "changed"  # type: ignore[misc]
    assert [c.request.created_at for c in got] == sorted(c.request.created_at for c in got)


def test_claim_in_claim_order_within_the_limit(db, database_url, world) -> None:
    company = add_company(db, "C")
    same_time = add(db, world, company, 5, age=timedelta(minutes=10))  # equal next_attempt_at: by sequence
    older = add(db, world, company, 5, age=timedelta(minutes=20), spread=timedelta(seconds=1))

    got = run(database_url, lambda e: claim(e, company, owner="r", limit=7, lease_seconds=60))
    assert {c.id for c in got} == {*older, *same_time[:2]}


def test_claim_by_status_set(db, database_url, world) -> None:
    company = add_company(db, "C")
    pending = add(db, world, company, 3, age=timedelta(hours=1))
    lookups = add(db, world, company, 2, status="needs_reconcile", age=timedelta(minutes=1))

    only_lookups = run(
        database_url,
        lambda e: claim(e, company, owner="reconcile", limit=10, lease_seconds=60, statuses=("needs_reconcile",)),
    )
    assert {c.id for c in only_lookups} == set(lookups) and all(c.lookup_required for c in only_lookups)
    assert run(database_url, lambda e: claim(e, company, owner="x", limit=10, lease_seconds=60, statuses=())) == []
    with pytest.raises(ValueError):
        run(database_url, lambda e: claim(e, company, owner="x", limit=10, lease_seconds=60, statuses=("due",)))
    only_pending = run(
        database_url, lambda e: claim(e, company, owner="r", limit=10, lease_seconds=60, statuses=("pending",))
    )
    assert {c.id for c in only_pending} == set(pending)


# --- plans ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def backlog(db: Engine, world: World) -> Iterator[list[uuid.UUID]]:
    """A skewed backlog: 2 companies with 3,000 due routings each, 30 with 20, and 20,000 synced."""
    companies = [add_company(db, f"Co {i}") for i in range(32)]
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
                "created_by_company_id, created_by_technician_id) "
                "SELECT 'Job ' || g, 'St', 'Austin', 'TX', '78701', 'Owner', '5125550000', :r, :t "
                "FROM generate_series(1, 3700) g"
            ),
            {"r": world.referrer, "t": world.technician},
        )
        conn.execute(
            text(
                """
                WITH j AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM jobs),
                     c AS (SELECT id, n FROM unnest(CAST(:c AS uuid[])) WITH ORDINALITY AS t(id, n))
                INSERT INTO job_routings (job_id, receiving_company_id, status, next_attempt_at, external_id)
                SELECT j.id, c.id,
                       CASE WHEN j.n <= 625 THEN 'synced' WHEN j.n % 50 = 0 THEN 'needs_reconcile' ELSE 'pending' END,
                       now() - random() * interval '6 hours',
                       CASE WHEN j.n <= 625 THEN 'ext-' || j.n END
                  FROM c JOIN j ON j.n <= CASE WHEN c.n <= 2 THEN 3625 ELSE 645 END
                """
            ),
            {"c": companies},
        )
    with db.connect() as conn:
        # every table the queries read: statistics left by earlier tests must not steer the planner's estimates
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM (ANALYZE) job_routings, companies, provider_connections, jobs")
        )
    yield companies


def _nodes(plan: dict[str, Any], parent: dict[str, Any] | None = None) -> Iterator[tuple[dict[str, Any], Any]]:
    yield plan, parent
    for child in plan.get("Plans", []):
        yield from _nodes(child, plan)


def _explain(db: Engine, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    with db.begin() as conn:  # EXPLAIN without ANALYZE: nothing is claimed
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # a small table must not make the test flaky
        [[doc]] = conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), params).tuples().all()
    return dict(doc[0]["Plan"])


def _routing_scans(plan: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    return [(n, p) for n, p in _nodes(plan) if n.get("Relation Name") == "job_routings" and "Scan" in n["Node Type"]]


def test_claim_plan_walks_the_due_index_and_stops_after_the_batch(db, backlog) -> None:
    heavy = backlog[0]
    plan = _explain(
        db,
        _claim_statement(DUE_STATUSES).text,
        {"company": heavy, "limit": 200, "owner": "plan", "lease": 60},
    )
    nodes = [n for n, _ in _nodes(plan)]
    assert not [n for n in nodes if "Sort" in n["Node Type"]], plan  # no sort of the company's due rows
    [(scan, _)] = [(n, p) for n, p in _routing_scans(plan) if n.get("Index Name") != "pk_job_routings"]
    assert scan["Node Type"] == "Index Scan" and scan["Index Name"] == "ix_job_routings_due", plan
    limit = next(n for n in nodes if n["Node Type"] == "Limit")
    [lock] = limit["Plans"]
    assert lock["Node Type"] == "LockRows", plan
    # Limit -> LockRows -> nested loops driven by the ordered index scan: stops after 200 lockable rows, and the
    # jobs (and referring companies) are probed by primary key for those rows only, never read whole
    under_lock = [n for n, _ in _nodes(lock)]
    assert scan in under_lock, plan
    joins = [n for n in under_lock if "Join" in n["Node Type"] or n["Node Type"] == "Nested Loop"]
    assert joins and all(n["Node Type"] == "Nested Loop" for n in joins), plan
    jobs = [n for n in under_lock if n.get("Relation Name") == "jobs"]
    assert [n.get("Index Name") for n in jobs] == ["pk_jobs"], plan


def test_due_companies_plan_probes_per_company_and_never_reads_the_due_rows_whole(db, backlog) -> None:
    plan = _explain(db, monitoring._DUE.text, {"limit": 500, "cap": monitoring.DUE_COUNT_CAP})
    scans = _routing_scans(plan)
    assert len(scans) == 2, plan  # oldest due, capped count: one probe each per company
    for scan, parent in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), plan
        assert scan["Index Name"] == "ix_job_routings_due", plan
        assert parent["Node Type"] == "Limit", plan  # each probe stops: 1 row, or the count's cap
    # what is sorted is one row per company (its oldest due routing), never the due routings themselves
    sorts = [n for n, _ in _nodes(plan) if "Sort" in n["Node Type"]]
    assert sorts and all(n["Plan Rows"] <= len(backlog) for n in sorts), plan


def test_due_companies_plan_on_the_backlog_matches_the_answer(db, backlog) -> None:
    got = due(db, limit=5, count_cap=1000)
    assert len(got) == 5 and [d.oldest_due_at for d in got] == sorted(d.oldest_due_at for d in got)
    everyone = {d.company_id: d.due for d in due(db, limit=100, count_cap=1000)}
    with db.connect() as conn:
        exact = dict(
            conn.execute(
                text(
                    "SELECT receiving_company_id, least(count(*), 1000) FROM job_routings "
                    "WHERE status IN ('pending', 'needs_reconcile') AND next_attempt_at <= now() "
                    "GROUP BY receiving_company_id"
                )
            ).all()
        )
    assert everyone == exact
    assert everyone[backlog[0]] == 1000 and everyone[backlog[2]] == 20
