"""Sensors: new work → runs; final run failures → one alert each."""

import logging
import time

import dagster as dg
import httpx

from integration_core.delivery.leases import expire_leases, lease_owners
from integration_core.delivery.monitoring import DueCompany, due_companies
from integration_core.delivery.runs import release_held
from integration_core.delivery.scheduling import expected_run_seconds, queued_priority, run_priority
from integration_core.settings import get_settings
from pipelines.assets import SENSOR_TRIGGER_TAG, deliver_job
from pipelines.partitions import COMPANY_ID_TAG, PARTITIONS, receiving_companies
from pipelines.resources import IntegrationResource

log = logging.getLogger(__name__)

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


# A run is created NOT_STARTED and submitted (QUEUED) right after, within a second or two. One still NOT_STARTED
# this long after its creation was never submitted — its creator failed between the two (seen in `burst_chaos`:
# the run-retry daemon's new run, written while PostgreSQL restarted) — and nobody will submit it. Left alone it
# blocked its company's next run until run monitoring's start timeout (180 s).
ORPHANED_NOT_STARTED_SECONDS = 30.0


def companies_with_active_runs(instance: dg.DagsterInstance, *, now: float | None = None) -> set[str]:
    """Partition keys and company ids of the companies with a delivery run queued or running (an operator may have
    re-executed a partition from before migration 0005, keyed by the bare company id). A run left NOT_STARTED for
    ORPHANED_NOT_STARTED_SECONDS is marked CANCELED (with the reason, in the UI) and blocks nothing."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=deliver_job.name, statuses=ACTIVE_STATUSES), limit=10_000
    )
    now = time.time() if now is None else now
    busy: set[str] = set()
    for r in records:
        run = r.dagster_run
        if run.status == dg.DagsterRunStatus.NOT_STARTED and now - r.create_timestamp.timestamp() > (
            ORPHANED_NOT_STARTED_SECONDS
        ):
            message = (
                f"never submitted: still NOT_STARTED {now - r.create_timestamp.timestamp():.0f} s after it was "
                "created (its creator failed before queueing it); canceled so that the sensor can start its company's "
                "next run"
            )
            log.warning("delivery run %s %s", run.run_id, message)
            instance.report_run_canceled(run, message=f"Run {message}.")
            continue
        busy.update(key for key in (run.tags.get("dagster/partition"), run.tags.get(COMPANY_ID_TAG)) if key)
    return busy


def release_ended_holders(instance: dg.DagsterInstance, integration: IntegrationResource) -> None:
    """Leases end with their run, whichever launcher ran it: leases that ran out go to needs_reconcile, and
    routings still leased by a run Dagster has finished (its worker died where nobody released for it) go back
    — to pending at once, or (a request may have left) to needs_reconcile once the run's lease has run out."""
    with integration.session() as session:
        conn = session.connection()
        expired = expire_leases(conn)
        owners = lease_owners(conn)
    if expired:
        log.warning("%d expired lease(s) moved to needs_reconcile", len(expired))
    if not owners:
        return
    runs = instance.get_runs(filters=dg.RunsFilter(run_ids=sorted(owners)))
    for run in runs:
        if run.is_finished:
            release_held(integration.settings(), run.run_id, holder_stopped=False)


def prioritise_queued(instance: dg.DagsterInstance, *, now: float | None = None) -> int:
    """Raise queued delivery runs that should not wait behind newer ones (`delivery.scheduling.queued_priority`): a
    retry or re-execution (its worker died, an operator re-ran it) to the front, a run queued AGED_AFTER_SECONDS
    above every new run. Returns how many were raised."""
    queued = instance.get_run_records(
        filters=dg.RunsFilter(job_name=deliver_job.name, statuses=[dg.DagsterRunStatus.QUEUED]), limit=10_000
    )
    now = time.time() if now is None else now
    raised = 0
    for record in queued:
        tags = record.dagster_run.tags
        priority = queued_priority(
            tags.get("dagster/priority"),
            retry=bool(tags.get("dagster/parent_run_id")),
            queued_for_seconds=now - record.create_timestamp.timestamp(),
        )
        if priority is not None:
            instance.add_run_tags(record.dagster_run.run_id, {"dagster/priority": str(priority)})
            raised += 1
    return raised


def tick_interval(seconds: int) -> int:
    """The `minimum_interval_seconds` that makes the daemon tick every `seconds`.

    The daemon walks its sensors on a fixed 5-s loop and compares the time since the previous tick *started*
    with the minimum interval; that difference lands a hair under the loop period, so asking for exactly 5 s
    ticks every 10 s (measured: ticks 10 s apart with SENSOR_INTERVAL_SECONDS=5). Asking for one second less
    gives the period asked for; intervals are in effect rounded up to the 5-s loop."""
    return max(1, seconds - 1)


def _expected_seconds(company: DueCompany) -> float:
    return expected_run_seconds(
        due=company.due,
        provider=company.provider,
        delivery_mode=company.delivery_mode,
        rate_per_second=company.rate_limit_per_second,
    )


@dg.sensor(
    job=deliver_job,
    minimum_interval_seconds=tick_interval(get_settings().sensor_interval_seconds),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one delivery run per receiving company with due routings (none while one is queued "
    "or running for that company); registers new companies as partitions.",
)
def pending_routings_sensor(
    context: dg.SensorEvaluationContext, integration: IntegrationResource
) -> dg.SensorResult | dg.SkipReason:
    settings = integration.settings()
    release_ended_holders(context.instance, integration)
    prioritise_queued(context.instance)
    with integration.session() as session:
        due = due_companies(session, limit=settings.sensor_max_companies)
    if not due:
        return dg.SkipReason("no due pending routings for any company with an enabled connection")
    tick = int(context.cursor or 0) + 1
    known = set(context.instance.get_dynamic_partitions(PARTITIONS))
    busy = companies_with_active_runs(context.instance)
    new_keys = sorted({d.partition_key for d in due} - known)
    requests = [
        dg.RunRequest(
            partition_key=d.partition_key,
            # unique per tick: a key never blocks a later run; one run per company is ensured by `busy` above
            # and by the per-partition concurrency limit in dagster.yaml
            run_key=f"{d.partition_key}:{tick}",
            tags={
                # referrals waiting: ahead of reconcile, pulls and checks; the shortest expected run first
                "dagster/priority": str(run_priority(expected)),
                "si/expected_run_s": f"{expected:.1f}",
                "provider": d.provider,
                "tenant": d.tenant_id,
                "company": d.name[:200],
                COMPANY_ID_TAG: str(d.company_id),
                SENSOR_TRIGGER_TAG: "sensor",
                "si/due_routings": str(d.due),
            },
        )
        for d, expected in ((d, _expected_seconds(d)) for d in due)
        if d.partition_key not in busy and str(d.company_id) not in busy
    ]
    if not requests:
        return dg.SkipReason(
            f"{len(due)} compan{'y has' if len(due) == 1 else 'ies have'} due routings, but each already has a "
            "delivery run queued or running"
        )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[receiving_companies.build_add_request(new_keys)] if new_keys else [],
        cursor=str(tick),
    )


def send_alert(url: str | None, payload: dict[str, str]) -> None:
    if not url:
        return
    try:
        httpx.post(url, json=payload, timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("alert webhook failed: %s", type(exc).__name__)


def step_failures(context: dg.RunFailureSensorContext) -> list[str]:
    """The failed steps' own messages (a dg.Failure's description)."""
    messages: list[str] = []
    for event in context.get_step_failure_events():
        error = getattr(event.event_specific_data, "error", None)
        text = getattr(error, "message", None) or event.message or ""
        messages.append(f"{event.step_key}: {text.strip()}")
    return messages


@dg.run_failure_sensor(
    # every job of the code location: delivery, reconcile, pulls, retention, checks, the daily reports (an SLA
    # breach of ERROR severity fails its run, naming the offenders), and runs launched from the UI (backfills
    # run as the implicit asset job)
    monitored_jobs=None,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One alert per final run failure of any job (runs that will be retried are skipped): a log line, "
    "and a POST to ALERT_WEBHOOK_URL when set. Covers the daily reports' SLA checks (ERROR fails the run).",
)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    if run.tags.get("dagster/will_retry") == "true":
        return
    payload = {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition", ""),
        "company": run.tags.get("company", ""),
        "company_id": run.tags.get(COMPANY_ID_TAG, ""),
        "error": (context.failure_event.message or "")[:500],
        # why the steps failed (an SLA breach in the daily reports names its offenders here)
        "steps": " | ".join(step_failures(context))[:1000],
    }
    context.log.error(f"ALERT run failed: {payload}")
    send_alert(get_settings().alert_webhook_url, payload)
