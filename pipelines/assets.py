"""`referral_deliveries`: deliver a receiving company's referrals (routings) into its field-service system.

(Named `fsm_deliveries` before migration 0005; its history stays under that asset key: docs/reports.md.)"""

import uuid
from typing import Any

import dagster as dg

from integration_core.delivery.engine import BatchSummary, drain
from integration_core.delivery.retry import retry_failed
from integration_core.referrals.directory import company_for_partition_key
from pipelines.partitions import COMPANY_ID_TAG, receiving_companies
from pipelines.resources import IntegrationResource

SENSOR_TRIGGER_TAG = "si/trigger"


def _operator_asked(context: dg.AssetExecutionContext) -> bool:
    """A re-execution, a backfill, or a launch from the UI (anything the sensor did not start)."""
    run = context.run
    return bool(run.parent_run_id or run.tags.get("dagster/backfill") or run.tags.get(SENSOR_TRIGGER_TAG) != "sensor")


def summary_metadata(summary: BatchSummary) -> dict[str, Any]:
    """Counts, latency and rate figures, and a small failure table. Routing ids and provider messages only:
    the engine has already redacted homeowner data from every message."""
    p50, p95 = summary.percentile(0.5), summary.percentile(0.95)
    meta: dict[str, Any] = {
        "claimed": summary.claimed,
        **{f"outcome_{k}": v for k, v in sorted(summary.outcomes.items())},
        "routed_to_synced_p50_s": dg.MetadataValue.float(round(p50, 3)) if p50 is not None else None,
        "routed_to_synced_p95_s": dg.MetadataValue.float(round(p95, 3)) if p95 is not None else None,
        "provider_requests": summary.requests,
        "rate_limited_429s": summary.throttled,
        "limiter_wait_s": dg.MetadataValue.float(round(summary.limiter_wait_seconds, 3)),
        "elapsed_s": dg.MetadataValue.float(round(summary.elapsed_seconds, 3)),
    }
    if summary.stopped:
        meta["stopped"] = summary.stopped
    if summary.failures:
        meta["failures"] = dg.MetadataValue.table(
            records=[
                dg.TableRecord(
                    {"routing_id": str(f.routing_id), "error_code": f.error_code, "provider_message": f.message[:300]}
                )
                for f in summary.failures[:50]
            ],
            schema=dg.TableSchema(
                columns=[
                    dg.TableColumn("routing_id", "string"),
                    dg.TableColumn("error_code", "string"),
                    dg.TableColumn("provider_message", "string"),
                ]
            ),
        )
    return {k: v for k, v in meta.items() if v is not None}


@dg.asset(
    partitions_def=receiving_companies,
    kinds={"servicetitan", "postgres"},
    description=(
        "Routings delivered into each receiving company's field-service system. One partition per receiving "
        "company. A run claims due routings, delivers them under the tenant's rate budget and keeps going "
        "while work is due (within RUN_TIME_BUDGET_SECONDS). Terminal failures fail the partition; "
        "re-executing it (or a backfill) first returns the company's failed routings to pending."
    ),
)
def referral_deliveries(
    context: dg.AssetExecutionContext, integration: IntegrationResource
) -> dg.MaterializeResult[None]:
    with integration.session() as session:
        company = company_for_partition_key(session, context.partition_key)
        if company is None:
            raise dg.Failure(
                description=f"no company has partition key {context.partition_key!r} (deleted?); nothing to deliver"
            )
        company_id: uuid.UUID = company.id
        company_name = company.name
    run_id = context.run.run_id
    if context.run.tags.get(COMPANY_ID_TAG) != str(company_id):  # launched from the UI, a backfill: searchable too
        context.instance.add_run_tags(run_id, {COMPANY_ID_TAG: str(company_id)})
    meta: dict[str, Any] = {"company_id": str(company_id), "company": company_name}
    if _operator_asked(context):
        with integration.session() as session:
            retried = retry_failed(
                session, company_id=company_id, actor=f"dagster:{run_id}", reason="partition re-executed"
            )
        meta["failed_returned_to_pending"] = len(retried)
        context.log.info(f"returned {len(retried)} failed routing(s) to pending before delivering")

    settings = integration.settings()
    instance = context.instance

    def slot_not_needed() -> bool:
        """Linger only while no queued run is waiting for a slot this run holds (the global cap in dagster.yaml
        is reached and something is queued: yield)."""
        if not instance.get_runs_count(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])):
            return True
        running = instance.get_runs_count(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])
        )
        cap = instance.get_concurrency_config().run_queue_config
        return cap is None or running < cap.max_concurrent_runs

    summary = integration.run_async(
        lambda engine, s: drain(
            engine,
            s,
            company_id,
            run_id,
            time_budget_seconds=settings.run_time_budget_seconds,
            idle_seconds=settings.run_idle_seconds,
            poll_seconds=settings.run_poll_seconds,
            keep_waiting=slot_not_needed,
        ),
        lease_owner=run_id,  # however the run ends, what it still holds goes back (delivery/leases.py)
    )
    meta.update(summary_metadata(summary))
    context.log.info(
        f"delivered company {company_id}: {dict(summary.outcomes)}; 429s {summary.throttled}; "
        f"p50 {summary.percentile(0.5)} s"
    )
    if summary.database_unavailable:
        raise dg.Failure(
            description=(
                f"the database was unavailable for longer than DB_RETRY_SECONDS ({settings.db_retry_seconds:g} s); "
                f"the run stopped and gave back the routings it held ({summary.stopped}). Nothing is lost: the "
                "sensor starts a new run once the database answers."
            ),
            metadata=meta,
        )
    if summary.terminal_failures:
        raise dg.Failure(
            description=(
                f"{summary.terminal_failures} routing(s) failed terminally for company {company_id}; see the "
                "failures table. Fix the cause (connection settings, the provider's message), then re-execute "
                "this partition: its failed routings go back to pending first."
            ),
            metadata=meta,
        )
    return dg.MaterializeResult(metadata=meta)


deliver_job = dg.define_asset_job(
    "deliver_routings",
    # the delivery step alone: the asset's checks look at every company at once (failure rates over 24 h, the
    # oldest due routing, expired leases, the webhook inbox) and run on their own schedule (delivery_checks_job,
    # webhook_checks_job) or from the UI. Run inside every delivery run they added four steps to each, about
    # as much work as the delivery itself in a burst of short runs, and answered the same question 50 times.
    selection=dg.AssetSelection.assets(referral_deliveries).without_checks(),
    executor_def=dg.in_process_executor,
    description="Deliver one receiving company's due routings (requested by the pending-routings sensor).",
)
