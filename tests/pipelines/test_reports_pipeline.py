"""The daily report assets in Dagster: metadata an engineer reads at a glance, SLA checks that fail and pass, the
run-failure alert naming offenders, and a 7-day backfill equal to 7 fresh days. Real PostgreSQL; the fixed data
set of tests/support/reports.py (figures computed by hand there and in tests/reports)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from integration_core.db.engine import session_scope
from integration_core.reports import write_delivery_report, write_referral_outcomes
from integration_core.settings import get_settings
from pipelines.definitions import defs
from pipelines.reports import (
    CHECK_FAILURE_RATE,
    CHECK_P95,
    daily_partitions,
    delivery_report,
    referral_outcomes,
    reports_job,
)
from pipelines.resources import IntegrationResource
from pipelines.sensors import run_failure_alert
from tests.support.config import TEST_SECRET_KEY
from tests.support.reports import TZ, D, ReportWorld, make_report_world


@pytest.fixture()
def integration(database_url: str) -> IntegrationResource:
    return IntegrationResource(database_url=database_url, secret_key=TEST_SECRET_KEY)


@pytest.fixture()
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture()
def world(db: Engine) -> ReportWorld:
    return make_report_world(db)


def _thresholds(monkeypatch: pytest.MonkeyPatch, sla: float, failure_rate: float, factor: float = 2.0) -> None:
    monkeypatch.setenv("REPORTING_TIMEZONE", TZ)
    monkeypatch.setenv("DELIVERY_SLA_SECONDS", str(sla))
    monkeypatch.setenv("FAILURE_RATE_THRESHOLD", str(failure_rate))
    monkeypatch.setenv("SLA_ERROR_FACTOR", str(factor))
    get_settings.cache_clear()


def _materialize(
    instance: dg.DagsterInstance, integration: IntegrationResource, day: str, *, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [delivery_report, referral_outcomes],
        partition_key=day,
        instance=instance,
        resources={"integration": integration},
        raise_on_error=raise_on_error,
    )


def _table(value: object) -> dg.TableMetadataValue:
    assert isinstance(value, dg.TableMetadataValue)
    return value


def _md(value: object) -> str:
    assert isinstance(value, dg.MarkdownMetadataValue)
    return value.md_str or ""


def _schedule() -> dg.ScheduleDefinition:
    return defs.resolve_schedule_def("daily_reports_schedule")


def test_definitions_have_the_reports_daily_in_the_reporting_time_zone() -> None:
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("daily_reports").partitions_def == daily_partitions
    assert daily_partitions.timezone == get_settings().reporting_timezone
    assert _schedule().execution_timezone == daily_partitions.timezone
    assert _schedule().default_status == dg.DefaultScheduleStatus.RUNNING


def test_materialization_carries_preview_summary_and_numbers(
    db: Engine, world: ReportWorld, integration: IntegrationResource, instance: dg.DagsterInstance, monkeypatch
) -> None:
    _thresholds(monkeypatch, sla=1000, failure_rate=0.6)
    result = _materialize(instance, integration, D.isoformat())
    assert result.success

    [mat] = result.asset_materializations_for_node("delivery_report")
    meta = mat.metadata
    assert mat.partition == "2026-06-10"
    assert (meta["routed"].value, meta["synced"].value, meta["failed"].value, meta["still_open"].value) == (4, 3, 1, 0)
    assert meta["worst_p95_s"].value == 300.0 and meta["failure_rate"].value == 0.25
    assert meta["dagster/row_count"].value == 2
    preview = _table(meta["preview"])
    assert [r.data["company_name"] for r in preview.records] == ["Alpha Electric", "Beta Plumbing"]
    assert preview.records[0].data["routed_to_synced_p95_s"] == 117.0
    assert "routed_to_synced_p95_s" in {c.name for c in preview.schema.columns}
    summary = _md(meta["summary"])
    assert (
        "Deliveries for 2026-06-10" in summary and "America/Los_Angeles" in summary and "| Alpha Electric |" in summary
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks[CHECK_P95].passed and checks[CHECK_FAILURE_RATE].passed

    [outcomes] = result.asset_materializations_for_node("referral_outcomes")
    assert (outcomes.metadata["referred"].value, outcomes.metadata["completed"].value) == (3, 1)
    assert outcomes.metadata["revenue"].value == 250.0 and outcomes.metadata["conversion_rate"].value == 0.3333
    assert _table(outcomes.metadata["preview"]).records[0].data["revenue"] == 250.0


def test_sla_checks_warn_then_fail_the_run_and_the_alert_names_the_offenders(
    db: Engine, world: ReportWorld, integration: IntegrationResource, instance: dg.DagsterInstance, monkeypatch
) -> None:
    # WARN only: Beta's p95 300 s is over 250 (not over 500); its failure rate 0.5 over 0.3 (not over 0.6)
    _thresholds(monkeypatch, sla=250, failure_rate=0.3)
    warned = _materialize(instance, integration, D.isoformat())
    assert warned.success
    checks = {e.check_name: e for e in warned.get_asset_check_evaluations()}
    for name in (CHECK_P95, CHECK_FAILURE_RATE):
        assert not checks[name].passed and checks[name].severity == dg.AssetCheckSeverity.WARN
        assert checks[name].metadata["offenders"].value == 1
        assert "Beta Plumbing" in _md(checks[name].metadata["offending_companies"])

    # ERROR: p95 over 2 x 100 s. The report is still written (materialized), the run fails
    _thresholds(monkeypatch, sla=100, failure_rate=0.3)
    failed = _materialize(instance, integration, D.isoformat(), raise_on_error=False)
    assert not failed.success
    assert failed.asset_materializations_for_node("delivery_report")
    checks = {e.check_name: e for e in failed.get_asset_check_evaluations()}
    p95 = checks[CHECK_P95]
    assert not p95.passed and p95.severity == dg.AssetCheckSeverity.ERROR
    listing = _md(p95.metadata["offending_companies"])
    assert "Beta Plumbing" in listing and "ERROR" in listing and "Alpha Electric" in listing  # 117 s: WARN
    failure = failed.failure_data_for_node("delivery_report")
    assert failure is not None and failure.error is not None and "Beta Plumbing" in failure.error.message
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM report_delivery_daily WHERE day = :d"), {"d": D}).scalar() == 2

    # the run-failure alert (every job) posts the failure, offenders included
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
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    get_settings.cache_clear()
    run = instance.get_run_by_id(failed.run_id)
    assert run is not None
    [event] = [
        e.dagster_event
        for e in instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        if e.dagster_event is not None
    ]
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_event=event, dagster_instance=instance, dagster_run=run
    ).for_run_failure()
    run_failure_alert(context)
    server.server_close()
    [payload] = received
    assert payload["partition"] == "2026-06-10"
    assert "delivery_report" in payload["steps"] and "Beta Plumbing" in payload["steps"]


def test_a_seven_day_backfill_equals_seven_fresh_days(
    db: Engine, world: ReportWorld, integration: IntegrationResource, instance: dg.DagsterInstance, monkeypatch
) -> None:
    _thresholds(monkeypatch, sla=1000, failure_rate=1.0)
    first, last = D - timedelta(days=2), D + timedelta(days=4)
    keys = daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first.isoformat(), last.isoformat()))
    assert len(keys) == 7
    job = dg.Definitions(
        assets=[delivery_report, referral_outcomes], jobs=[reports_job], resources={"integration": integration}
    ).resolve_job_def(reports_job.name)
    for key in keys:  # what a UI backfill does: one run of the job per day
        assert job.execute_in_process(partition_key=key, instance=instance).success

    def snapshot() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        with db.connect() as conn:
            return (
                [
                    tuple(r)
                    for r in conn.execute(
                        text(
                            "SELECT day, receiving_company_id, provider, partition_key, company_name, routed, "
                            "synced, failed, still_open, failure_rate, routed_to_synced_p50_s, routed_to_synced_p95_s, "
                            "routed_to_synced_max_s, attempts, attempts_per_delivery, rate_limited_429, "
                            "top_error_codes, timezone FROM report_delivery_daily ORDER BY 1, 2, 3"
                        )
                    )
                ],
                [
                    tuple(r)
                    for r in conn.execute(
                        text(
                            "SELECT day, referring_company_id, technician_id, partition_key, company_name, "
                            "technician_name, referred, delivered, accepted, completed, canceled_dismissed, "
                            "revenue, conversion_rate, median_days_to_completion, timezone "
                            "FROM report_referral_outcomes_daily ORDER BY 1, 2, 3"
                        )
                    )
                ],
            )

    backfilled = snapshot()
    with db.begin() as conn:
        conn.execute(text("TRUNCATE report_delivery_daily, report_referral_outcomes_daily"))
    with session_scope(db) as session:  # seven single days, computed fresh
        day = first
        while day <= last:
            write_delivery_report(session, day, TZ)
            write_referral_outcomes(session, day, TZ)
            day += timedelta(days=1)
    fresh = snapshot()
    assert backfilled == fresh
    assert {r[0] for r in backfilled[0]} == {D - timedelta(days=1), D, D + timedelta(days=1), D + timedelta(days=2)}
    assert len(backfilled[0]) == 5 and len(backfilled[1]) == 5

    # the schedule asks for yesterday's partition of the job
    tick = _schedule().evaluate_tick(dg.build_schedule_context(instance=instance))
    [request] = tick.run_requests or []
    assert request.partition_key == daily_partitions.get_last_partition_key()
