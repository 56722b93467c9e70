"""Webhooks in Dagster: the sensor that applies the inbox every few seconds, and the check that fails when
events wait too long (docs/webhooks.md). Every decision lives in `integration_core.webhooks`."""

from __future__ import annotations

import dagster as dg

from integration_core.settings import get_settings
from integration_core.webhooks.apply import ApplySummary, apply_inbox, oldest_unapplied_age
from pipelines.assets import referral_deliveries
from pipelines.resources import IntegrationResource
from pipelines.sensors import tick_interval

_settings = get_settings()


@dg.sensor(
    minimum_interval_seconds=tick_interval(_settings.webhook_apply_interval_seconds),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Applies stored provider webhook events to their routings (status, completion, revenue) through "
    "the status pull's write path; events for records we do not know are kept as unmatched.",
)
def webhook_inbox_sensor(context: dg.SensorEvaluationContext, integration: IntegrationResource) -> dg.SkipReason:
    summary: ApplySummary = integration.run_async(lambda engine, settings: apply_inbox(engine, settings))
    if summary.events:
        context.log.info(
            f"webhooks: {summary.applied} applied ({summary.changed} changed a routing), "
            f"{summary.unmatched} unmatched, {summary.errors} failed, {summary.deferred} deferred (database busy)"
        )
    return dg.SkipReason(
        f"inbox applied: {summary.events} event(s), {summary.applied} applied, {summary.changed} changed, "
        f"{summary.unmatched} unmatched, {summary.errors} failed"
    )


@dg.asset_check(
    asset=referral_deliveries,
    description="No stored webhook event has waited longer than WEBHOOK_UNAPPLIED_MAX_AGE_SECONDS to be applied "
    "(the webhook sensor is running and keeping up).",
)
def webhook_inbox_applied(integration: IntegrationResource) -> dg.AssetCheckResult:
    threshold = integration.settings().webhook_unapplied_max_age_seconds
    age = integration.run_async(lambda engine, _settings: oldest_unapplied_age(engine))
    return dg.AssetCheckResult(
        passed=age is None or age <= threshold,
        metadata={"oldest_unapplied_age_s": round(age, 1) if age is not None else 0.0, "threshold_s": threshold},
    )


webhook_checks = [webhook_inbox_applied]

webhook_checks_job = dg.define_asset_job(
    "webhook_checks_job",
    selection=dg.AssetSelection.checks(*webhook_checks),
    executor_def=dg.in_process_executor,
)

webhook_checks_schedule = dg.ScheduleDefinition(
    name="webhook_checks",
    job=webhook_checks_job,
    cron_schedule=_settings.checks_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
    description="The webhook inbox check (CHECKS_CRON).",
)
