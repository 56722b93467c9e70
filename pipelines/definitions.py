"""The Dagster code location: a thin map of *when* things run. Every decision lives in `integration_core`."""

from __future__ import annotations

import dagster as dg

from integration_core.settings import set_in_environment
from pipelines.assets import deliver_job, referral_deliveries
from pipelines.checks import checks_job, delivery_checks
from pipelines.jobs import pull_updates_job, reconcile_job, retention_job
from pipelines.reports import report_assets, reports_job, reports_schedule
from pipelines.resources import IntegrationResource
from pipelines.schedules import checks_schedule, pull_updates_schedule, reconcile_schedule, retention_schedule
from pipelines.sensors import pending_routings_sensor, run_failure_alert
from pipelines.webhooks import webhook_checks, webhook_checks_job, webhook_checks_schedule, webhook_inbox_sensor


def _integration() -> IntegrationResource:
    # secrets as EnvVar (resolved at launch, hidden in the UI) where the environment provides them
    return IntegrationResource(
        database_url=dg.EnvVar("DATABASE_URL") if set_in_environment("DATABASE_URL") else None,
        secret_key=dg.EnvVar("SECRET_KEY") if set_in_environment("SECRET_KEY") else None,
    )


defs = dg.Definitions(
    assets=[referral_deliveries, *report_assets],
    asset_checks=[*delivery_checks, *webhook_checks],
    jobs=[deliver_job, reconcile_job, pull_updates_job, retention_job, checks_job, reports_job, webhook_checks_job],
    sensors=[pending_routings_sensor, run_failure_alert, webhook_inbox_sensor],
    schedules=[
        reconcile_schedule,
        pull_updates_schedule,
        retention_schedule,
        checks_schedule,
        reports_schedule,
        webhook_checks_schedule,
    ],
    resources={"integration": _integration()},
)
