"""Schedules replacing Celery beat. Intervals are settings (cron strings)."""

from __future__ import annotations

import dagster as dg

from integration_core.settings import get_settings
from pipelines.checks import checks_job
from pipelines.jobs import pull_updates_job, reconcile_job, retention_job

_settings = get_settings()

reconcile_schedule = dg.ScheduleDefinition(
    name="reconcile_every_minute",
    job=reconcile_job,
    cron_schedule=_settings.reconcile_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
    description="Expired leases and unknown outcomes are looked up at the provider (RECONCILE_CRON).",
)
pull_updates_schedule = dg.ScheduleDefinition(
    name="pull_updates",
    job=pull_updates_job,
    cron_schedule=_settings.pull_updates_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
    description="Status, completion and revenue of delivered work, one run for every company with open "
    "routings (PULL_UPDATES_CRON).",
)
retention_schedule = dg.ScheduleDefinition(
    name="retention",
    job=retention_job,
    cron_schedule=_settings.retention_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
    description="Old attempts of finished routings are deleted (RETENTION_CRON, RETENTION_DAYS).",
)
checks_schedule = dg.ScheduleDefinition(
    name="delivery_checks",
    job=checks_job,
    cron_schedule=_settings.checks_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
    description="Asset checks on referral_deliveries (CHECKS_CRON).",
)
