"""Op jobs for the schedules that replace Celery beat: reconcile, status/revenue pull, retention."""

import asyncio
import uuid

import dagster as dg
from sqlalchemy.ext.asyncio import AsyncEngine

from integration_core.delivery.engine import reconcile
from integration_core.delivery.monitoring import companies_with_open_routings, purge_attempts
from integration_core.delivery.updates import PullSummary, pull_updates
from integration_core.settings import Settings
from pipelines.resources import IntegrationResource


@dg.op(description="Expired leases → needs_reconcile; look every needs_reconcile routing up by its marker.")
def reconcile_op(context: dg.OpExecutionContext, integration: IntegrationResource) -> dg.Output[int]:
    run_id = context.run.run_id
    result = integration.run_async(lambda e, s: reconcile(e, s, run_id), lease_owner=run_id)
    outcomes = dict(result.outcomes)
    context.log.info(f"reconcile: {result.expired_leases} expired lease(s); lookups {outcomes}")
    return dg.Output(
        result.expired_leases,
        metadata={
            "expired_leases": result.expired_leases,
            "companies": result.companies,
            "without_connection": result.without_connection,
            **{f"outcome_{k}": v for k, v in sorted(outcomes.items())},
        },
    )


@dg.op(description="Pull status, completion and revenue for every company with open delivered work.")
def pull_updates_op(context: dg.OpExecutionContext, integration: IntegrationResource) -> dg.Output[int]:
    with integration.session() as session:
        companies = companies_with_open_routings(session)
    concurrency = integration.settings().pull_concurrency

    async def pull_all(engine: AsyncEngine, settings: Settings) -> list[PullSummary]:
        sem = asyncio.Semaphore(concurrency)

        async def one(company: uuid.UUID) -> PullSummary:
            async with sem:
                return await pull_updates(engine, settings, company)

        return await asyncio.gather(*(one(c) for c in companies))

    summaries = integration.run_async(pull_all) if companies else []
    updated = sum(s.routings_updated for s in summaries)
    errors = [f"{s.company_id}: {s.error}" for s in summaries if s.error]
    for e in errors:
        context.log.warning(f"status pull failed for {e}")
    return dg.Output(
        updated,
        metadata={
            "companies": len(companies),
            "routings_updated": updated,
            "jobs_completed": sum(s.jobs_completed for s in summaries),
            # what the pull found that no webhook had told us (docs/webhooks.md)
            "changes_not_from_webhooks": sum(s.changes_not_from_webhooks for s in summaries),
            "errors": len(errors),
        },
    )


@dg.op(description="Delete old sync attempts of finished routings (RETENTION_DAYS), keeping each one's latest.")
def retention_op(context: dg.OpExecutionContext, integration: IntegrationResource) -> dg.Output[int]:
    days = integration.settings().retention_days
    with integration.session() as session:
        deleted = purge_attempts(session, older_than_days=days)
    context.log.info(f"retention: deleted {deleted} attempt(s) older than {days} days")
    return dg.Output(deleted, metadata={"deleted": deleted, "retention_days": days})


@dg.job(executor_def=dg.in_process_executor, tags={"si/singleton": "reconcile"})
def reconcile_job() -> None:
    reconcile_op()


@dg.job(executor_def=dg.in_process_executor, tags={"si/singleton": "pull_updates"})
def pull_updates_job() -> None:
    pull_updates_op()


@dg.job(executor_def=dg.in_process_executor, tags={"si/singleton": "retention"})
def retention_job() -> None:
    retention_op()
