"""The Dagster layer: definitions load, the sensor asks for the right runs, a partition delivers, a failed
partition re-executes into a delivery, schedules and checks run. Real PostgreSQL and the sandbox over HTTP."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest
from sqlalchemy import text

from integration_core.delivery.claims import claim
from integration_core.delivery.scheduling import AGED_AFTER_SECONDS, AGED_PRIORITY, RETRY_PRIORITY
from pipelines.assets import SENSOR_TRIGGER_TAG, deliver_job, referral_deliveries
from pipelines.checks import checks_job, delivery_checks
from pipelines.definitions import defs
from pipelines.jobs import pull_updates_job, reconcile_job, retention_job
from pipelines.partitions import COMPANY_ID_TAG, PARTITIONS
from pipelines.resources import IntegrationResource
from pipelines.schedules import pull_updates_schedule, reconcile_schedule, retention_schedule
from pipelines.sensors import (
    ORPHANED_NOT_STARTED_SECONDS,
    companies_with_active_runs,
    pending_routings_sensor,
    prioritise_queued,
    send_alert,
)
from tests.support.config import TEST_SECRET_KEY
from tests.support.dagster import DagsterHandle
from tests.support.delivery import run
from tests.support.world import add_receiver, add_routings, statuses


@pytest.fixture()
def integration(database_url: str) -> IntegrationResource:
    return IntegrationResource(database_url=database_url, secret_key=TEST_SECRET_KEY)


@pytest.fixture()
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    names = {j.name for j in defs.resolve_all_job_defs()}
    assert {"deliver_routings", "reconcile_job", "pull_updates_job", "retention_job", "delivery_checks_job"} <= names
    # SENSOR_INTERVAL_SECONDS=5: one second under the daemon's 5-s loop, so that it ticks every 5 s, not 10
    assert defs.resolve_sensor_def("pending_routings_sensor").minimum_interval_seconds == 4
    # one-step jobs on the in-process executor (launch cost: dagster-notes §6)
    assert deliver_job.executor_def is dg.in_process_executor


def test_a_delivery_run_is_the_delivery_step_alone() -> None:
    """The asset's checks look at all companies and run on their own schedule, not as extra steps of each of the
    many short delivery runs of a burst."""
    job = defs.resolve_job_def(deliver_job.name)
    assert [node.name for node in job.nodes] == ["referral_deliveries"]
    assert not job.asset_layer.asset_graph.asset_check_keys
    checks = defs.resolve_job_def(checks_job.name)
    assert {key.name for key in checks.asset_layer.asset_graph.asset_check_keys} == {
        c.check_key.name for c in delivery_checks
    }


def pkey(db, company: uuid.UUID) -> str:
    """The company's partition key (issued by the database at creation)."""
    with db.connect() as conn:
        return str(conn.execute(text("SELECT partition_key FROM companies WHERE id = :c"), {"c": company}).scalar_one())


def _queued_run(instance: dg.DagsterInstance, partition: str, status: dg.DagsterRunStatus) -> None:
    instance.add_run(
        dg.DagsterRun(
            job_name="deliver_routings",
            run_id=str(uuid.uuid4()),
            status=status,
            tags={"dagster/partition": partition},
        )
    )


def test_sensor_adds_only_new_partitions_and_one_run_per_idle_company(
    db, engine_settings, sandbox, world, integration, instance
) -> None:
    companies = [add_receiver(db, sandbox)[0] for _ in range(4)]
    for c in companies:
        add_routings(db, world, c, 2)
    known, new, busy = companies[:2], companies[2], companies[3]
    keys = {c: pkey(db, c) for c in companies}
    assert all(k.startswith("receiver-") for k in keys.values())  # readable: the name's slug + the id's start
    instance.add_dynamic_partitions(PARTITIONS, [keys[c] for c in (*known, busy)])
    _queued_run(instance, keys[busy], dg.DagsterRunStatus.NOT_STARTED)  # (QUEUED needs a remote origin)

    result = pending_routings_sensor(dg.build_sensor_context(instance=instance, cursor="7"), integration=integration)

    assert isinstance(result, dg.SensorResult)
    assert result.dynamic_partitions_requests is not None and result.run_requests is not None
    [add] = result.dynamic_partitions_requests
    assert list(add.partition_keys) == [keys[new]]
    assert sorted(str(r.partition_key) for r in result.run_requests) == sorted(keys[c] for c in (*known, new))
    assert all(r.tags[SENSOR_TRIGGER_TAG] == "sensor" and r.tags["tenant"] for r in result.run_requests)
    assert all(r.tags["provider"] == "servicetitan" for r in result.run_requests)  # runs name their provider
    assert {r.tags[COMPANY_ID_TAG] for r in result.run_requests} == {str(c) for c in (*known, new)}
    assert result.cursor == "8"
    assert {r.run_key for r in result.run_requests} == {f"{keys[c]}:8" for c in (*known, new)}


def test_the_sensor_puts_the_shortest_expected_run_first(
    db, engine_settings, sandbox, world, integration, instance
) -> None:
    """Two bookings at 5 requests/s take 0.4 s, ten of them 2 s, ten jobs (4 requests each) 8 s: the run queue
    starts the shorter ones first (`dagster/priority`), and each run says what it was expected to take."""
    short, _ = add_receiver(db, sandbox, mode="booking", rate=5)
    middle, _ = add_receiver(db, sandbox, mode="booking", rate=5)
    long, _ = add_receiver(db, sandbox, mode="job", rate=5)
    for company, n in ((short, 2), (middle, 10), (long, 10)):
        add_routings(db, world, company, n)

    result = pending_routings_sensor(dg.build_sensor_context(instance=instance), integration=integration)

    assert isinstance(result, dg.SensorResult) and result.run_requests is not None
    runs = {uuid.UUID(r.tags[COMPANY_ID_TAG]): r.tags for r in result.run_requests}
    assert {c: runs[c]["si/expected_run_s"] for c in (short, middle, long)} == {
        short: "0.4",
        middle: "2.0",
        long: "8.0",
    }
    priorities = [int(runs[c]["dagster/priority"]) for c in (short, middle, long)]
    assert priorities == [18, 17, 15]


def test_queued_runs_that_waited_or_are_retries_move_up(instance) -> None:
    """At each tick the sensor raises a queued retry to the front and a run queued AGED_AFTER_SECONDS above every
    new one, so that a long run is not kept waiting by a stream of shorter ones; nothing is lowered."""
    runs = DagsterHandle(url="", instance=instance)
    new = runs.queue_run("p-new", job_name=deliver_job.name, tags={"dagster/priority": "12"})
    retry = runs.queue_run("p-retry", job_name=deliver_job.name, tags={"dagster/parent_run_id": "x"})
    raised = runs.queue_run("p-op", job_name=deliver_job.name, tags={"dagster/priority": "30"})

    def priority(run_id: str) -> str | None:
        tags: dict[str, str] = instance.get_run_by_id(run_id).tags
        return tags.get("dagster/priority")

    assert prioritise_queued(instance, now=time.time()) == 1
    assert (priority(new), priority(retry), priority(raised)) == ("12", str(RETRY_PRIORITY), "30")
    assert prioritise_queued(instance, now=time.time() + AGED_AFTER_SECONDS + 1) == 1
    assert (priority(new), priority(retry), priority(raised)) == (str(AGED_PRIORITY), str(RETRY_PRIORITY), "30")
    assert prioritise_queued(instance, now=time.time() + AGED_AFTER_SECONDS + 1) == 0


def test_a_run_never_submitted_blocks_its_company_only_for_a_while(db, engine_settings, sandbox, world, instance):
    """A delivery run left NOT_STARTED (its creator failed before queueing it) is canceled after
    ORPHANED_NOT_STARTED_SECONDS and no longer keeps the sensor from starting its company's next run."""
    company, _ = add_receiver(db, sandbox)
    key = pkey(db, company)
    _queued_run(instance, key, dg.DagsterRunStatus.NOT_STARTED)
    started = time.time()
    assert companies_with_active_runs(instance, now=started) == {key}  # just created: it may be submitted yet
    assert companies_with_active_runs(instance, now=started + ORPHANED_NOT_STARTED_SECONDS + 5) == set()
    [run] = instance.get_runs(filters=dg.RunsFilter(job_name="deliver_routings"))
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert companies_with_active_runs(instance, now=started) == set()


def test_sensor_skips_with_a_reason(db, engine_settings, sandbox, world, integration, instance) -> None:
    result = pending_routings_sensor(dg.build_sensor_context(instance=instance), integration=integration)
    assert isinstance(result, dg.SkipReason) and "no due pending routings" in (result.skip_message or "")

    company, _ = add_receiver(db, sandbox)
    add_routings(db, world, company, 1)
    _queued_run(instance, str(company), dg.DagsterRunStatus.STARTED)  # a re-executed partition from before 0005
    result = pending_routings_sensor(dg.build_sensor_context(instance=instance), integration=integration)
    assert isinstance(result, dg.SkipReason) and "already has a delivery run" in (result.skip_message or "")


def test_materializing_a_partition_delivers_its_batch(
    db, engine_settings, sandbox, world, integration, instance
) -> None:
    company, tenant = add_receiver(db, sandbox)
    add_routings(db, world, company, 5)
    instance.add_dynamic_partitions(PARTITIONS, [pkey(db, company)])

    result = dg.materialize(
        [referral_deliveries],
        partition_key=pkey(db, company),
        instance=instance,
        resources={"integration": integration},
        tags={SENSOR_TRIGGER_TAG: "sensor", "company": "Receiver"},
    )

    assert result.success
    [mat] = result.asset_materializations_for_node("referral_deliveries")
    assert mat.metadata["outcome_synced"].value == 5
    p95 = mat.metadata["routed_to_synced_p95_s"].value
    assert isinstance(p95, int | float) and p95 >= 0
    assert "failed_returned_to_pending" not in mat.metadata  # the sensor's runs retry nothing
    assert statuses(db) == {"synced": 5}
    assert sandbox.inspect(tenant)["records"]["bookings"] == 5


def test_terminal_failure_fails_the_partition_and_re_execution_delivers(
    db, engine_settings, sandbox, world, integration, instance
) -> None:
    company, tenant = add_receiver(db, sandbox)
    with db.begin() as conn:
        good = conn.execute(text("SELECT settings->>'booking_provider_id' FROM provider_connections")).scalar()
        conn.execute(text("UPDATE provider_connections SET settings = settings || '{\"booking_provider_id\": 999999}'"))
    [rid] = add_routings(db, world, company, 1)
    instance.add_dynamic_partitions(PARTITIONS, [pkey(db, company)])

    failed = dg.materialize(
        [referral_deliveries],
        partition_key=pkey(db, company),
        instance=instance,
        resources={"integration": integration},
        tags={SENSOR_TRIGGER_TAG: "sensor"},
        raise_on_error=False,
    )
    assert not failed.success
    failure = failed.failure_data_for_node("referral_deliveries")
    assert failure is not None and "failed terminally" in (failure.error.message if failure.error else "")
    assert statuses(db) == {"failed": 1}

    with db.begin() as conn:  # the operator fixes the connection, then re-executes the partition
        conn.execute(
            text(
                "UPDATE provider_connections "
                "SET settings = settings || jsonb_build_object('booking_provider_id', CAST(:g AS bigint))"
            ),
            {"g": good},
        )
    again = dg.materialize(
        [referral_deliveries],
        partition_key=pkey(db, company),
        instance=instance,
        resources={"integration": integration},
    )
    assert again.success
    [mat] = again.asset_materializations_for_node("referral_deliveries")
    assert mat.metadata["failed_returned_to_pending"].value == 1
    assert statuses(db) == {"synced": 1}
    assert sandbox.inspect(tenant)["markers"]["bookings"] == {str(rid): 1}
    with db.connect() as conn:
        actors = conn.execute(text("SELECT actor FROM audit_log WHERE action = 'routings.retried'")).scalars().all()
    assert len(actors) == 1 and actors[0].startswith("dagster:")


def test_schedules_produce_the_right_run_requests() -> None:
    for schedule, job, cron in (
        (reconcile_schedule, reconcile_job, "* * * * *"),
        (pull_updates_schedule, pull_updates_job, "*/15 * * * *"),
        (retention_schedule, retention_job, "17 3 * * *"),
    ):
        assert schedule.cron_schedule == cron and schedule.job_name == job.name
        data = schedule.evaluate_tick(dg.build_schedule_context())
        assert data.run_requests and len(data.run_requests) == 1
    assert all(
        s.default_status == dg.DefaultScheduleStatus.RUNNING
        for s in (reconcile_schedule, pull_updates_schedule, retention_schedule)
    )


def test_reconcile_and_pull_jobs_run(db, engine_settings, sandbox, world, integration, instance) -> None:
    company, tenant = add_receiver(db, sandbox)
    [rid] = add_routings(db, world, company, 1)
    instance.add_dynamic_partitions(PARTITIONS, [pkey(db, company)])
    dg.materialize(
        [referral_deliveries],
        partition_key=pkey(db, company),
        instance=instance,
        resources={"integration": integration},
        tags={SENSOR_TRIGGER_TAG: "sensor"},
    )
    with db.begin() as conn:  # a crashed run's routing: claimed, lease long expired
        conn.execute(
            text(
                "UPDATE job_routings SET status = 'claimed', external_id = NULL, synced_at = NULL, "
                "lease_owner = 'dead', lease_expires_at = now() - interval '5 minutes', "
                "lookup_required = true"
            )
        )
    rec = reconcile_job.execute_in_process(instance=instance, resources={"integration": integration})
    assert rec.success and rec.output_for_node("reconcile_op") == 1
    assert statuses(db) == {"synced": 1}

    with db.connect() as conn:
        booking = conn.execute(text("SELECT external_id FROM job_routings")).scalar()
    sandbox.control.post(f"/_sandbox/tenants/{tenant}/bookings/{booking}/advance", json={"status": "Accepted"})
    pull = pull_updates_job.execute_in_process(instance=instance, resources={"integration": integration})
    assert pull.success and pull.output_for_node("pull_updates_op") == 1
    with db.connect() as conn:
        assert (
            conn.execute(text("SELECT external_status FROM job_routings WHERE id = :r"), {"r": rid}).scalar()
            == "accepted"
        )
    assert retention_job.execute_in_process(instance=instance, resources={"integration": integration}).success


def _checks(integration: IntegrationResource) -> dg.JobDefinition:
    """The delivery checks job, bound to the test's database."""
    return dg.Definitions(
        assets=[referral_deliveries],
        asset_checks=delivery_checks,
        jobs=[checks_job],
        resources={"integration": integration},
    ).resolve_job_def(checks_job.name)


def test_asset_checks_pass_and_fail(db, engine_settings, sandbox, world, integration, instance) -> None:
    job = _checks(integration)
    ok = job.execute_in_process(instance=instance)
    assert ok.success
    assert all(e.passed for e in ok.get_asset_check_evaluations())

    company, _ = add_receiver(db, sandbox)
    add_routings(db, world, company, 1)
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE job_routings SET status = 'claimed', lease_owner = 'x', "
                "lease_expires_at = now() - interval '1 hour', created_at = now() - interval '2 hours'"
            )
        )
    bad = job.execute_in_process(instance=instance, raise_on_error=False)
    results = {e.check_name: e.passed for e in bad.get_asset_check_evaluations()}
    assert results["no_expired_leases"] is False


def test_the_connection_check_keeps_the_stored_health_current(
    db, engine_settings, sandbox, integration, instance
) -> None:
    """A connection nobody has asked about is `unknown`, which public health reports as `degraded`: the checks
    schedule proves every enabled connection's credentials and stores the verdict the public endpoint reads."""
    from integration_core.operations.health import stored_providers_status

    job = _checks(integration)
    add_receiver(db, sandbox)
    assert stored_providers_status(db, engine_settings).status == "degraded"  # never checked: `unknown`
    ok = job.execute_in_process(instance=instance)
    [good] = [e for e in ok.get_asset_check_evaluations() if e.check_name == "provider_connections_healthy"]
    assert good.passed and good.metadata["healthy"].value == 1
    assert stored_providers_status(db, engine_settings).status == "up"

    add_receiver(db, sandbox, client_secret="cs1.definitely-wrong-secret")
    bad = job.execute_in_process(instance=instance, raise_on_error=False)
    [check] = [e for e in bad.get_asset_check_evaluations() if e.check_name == "provider_connections_healthy"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["unhealthy"].value == 1 and check.metadata["healthy"].value == 1
    assert "definitely-wrong-secret" not in json.dumps({k: str(v.value) for k, v in check.metadata.items()})
    with db.connect() as conn:
        healths = sorted(conn.execute(text("SELECT health FROM provider_connections")).scalars())
    assert healths == ["healthy", "unhealthy"]
    assert stored_providers_status(db, engine_settings).status == "degraded"


def test_alert_webhook_receives_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[dict[str, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    send_alert(f"http://127.0.0.1:{server.server_port}/hook", {"run_id": "r1", "job": "deliver_routings"})
    server.server_close()
    assert received == [{"run_id": "r1", "job": "deliver_routings"}]
    send_alert(None, {"run_id": "r2"})  # no URL: nothing to do, no error
    send_alert("http://127.0.0.1:9/nowhere", {"run_id": "r3"})  # unreachable: logged, never raised


def test_sensor_releases_what_finished_runs_still_hold(db, engine_settings, sandbox, world, integration, instance):
    """Leases end with their run, whichever launcher ran it: the sensor hands back what a run Dagster has
    finished still holds, and moves leases that ran out to needs_reconcile."""
    company, _ = add_receiver(db, sandbox)
    rids = add_routings(db, world, company, 4)
    finished, alive, unknown, expired = (str(uuid.uuid4()) for _ in range(4))
    for run_id, status in ((finished, dg.DagsterRunStatus.FAILURE), (alive, dg.DagsterRunStatus.STARTED)):
        instance.add_run(dg.DagsterRun(job_name="deliver_routings", run_id=run_id, status=status))
    with db.begin() as conn:
        for rid, owner, lease in zip(rids, (finished, alive, unknown, expired), ("60", "60", "60", "-1"), strict=True):
            conn.execute(
                text(
                    "UPDATE job_routings SET status = 'claimed', lease_owner = :o, "
                    "lease_expires_at = now() + make_interval(secs => :l) WHERE id = :id"
                ),
                {"o": owner, "l": int(lease), "id": rid},
            )

    pending_routings_sensor(dg.build_sensor_context(instance=instance), integration=integration)

    with db.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, status FROM job_routings")).all())
    assert rows[rids[0]] == "pending"  # its run is over: never sent, so due at once
    assert rows[rids[1]] == "claimed"  # its run is alive
    assert rows[rids[2]] == "claimed"  # not a Dagster run: its lease decides
    assert rows[rids[3]] == "needs_reconcile"  # the lease ran out: looked up first


def test_sensor_releases_what_finished_runs_leased_and_never_started(
    db, database_url, engine_settings, sandbox, world, integration, instance
):
    """A claim writes the lease only (delivery/claims.py): routings a finished run leased and never wrote to are
    still `pending`, found through the run's receipts, and due again at once; a live run keeps its own."""
    company, _ = add_receiver(db, sandbox)
    add_routings(db, world, company, 4)
    finished, alive = (str(uuid.uuid4()) for _ in range(2))
    for run_id, status in ((finished, dg.DagsterRunStatus.FAILURE), (alive, dg.DagsterRunStatus.STARTED)):
        instance.add_run(dg.DagsterRun(job_name="deliver_routings", run_id=run_id, status=status))

    async def body(engine):
        for owner in (finished, alive):
            await claim(engine, company, owner=owner, limit=2, lease_seconds=600)

    run(database_url, body)
    pending_routings_sensor(dg.build_sensor_context(instance=instance), integration=integration)

    with db.connect() as conn:
        held = dict(conn.execute(text("SELECT lease_owner, count(*) FROM job_routings GROUP BY 1")).all())
        receipts = [r[0] for r in conn.execute(text("SELECT owner FROM routing_claims"))]
    assert held == {None: 2, alive: 2}
    assert receipts == [alive]
    assert statuses(db, company) == {"pending": 4}
