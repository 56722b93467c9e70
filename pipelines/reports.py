"""Daily reports as partitioned assets: `delivery_report` and `referral_outcomes` (docs/reports.md).

One partition per calendar day in REPORTING_TIMEZONE, from REPORTS_START_DATE to yesterday. Each materialization
computes its day with `integration_core.reports` (pandas over PostgreSQL) and replaces that day's rows in the
report tables; its metadata carries a table preview, a markdown summary and the day's totals as numbers (the
asset's Plots tab draws them day by day). Backfills from the UI launch one run per day: the same code path as the
daily schedule, so a backfilled day has the numbers a fresh computation gives.

SLA checks on `delivery_report` (blocking): any company whose routed → synced p95 exceeds DELIVERY_SLA_SECONDS,
or whose failure rate exceeds FAILURE_RATE_THRESHOLD, fails the check, naming the offenders in its metadata —
WARN over the threshold, ERROR over SLA_ERROR_FACTOR times it. An ERROR fails the run after the report is written,
so the run-failure alert (pipelines/sensors.py) reports it with the offenders.
"""

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd

from integration_core.reports.daily import ReportResult, write_delivery_report, write_referral_outcomes
from integration_core.reports.days import day_bounds
from integration_core.reports.sla import SlaVerdict, failure_rate_verdict, latency_verdict
from integration_core.settings import get_settings
from pipelines.resources import IntegrationResource

_settings = get_settings()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=_settings.reports_start_date.isoformat(), timezone=_settings.reporting_timezone
)

PREVIEW_ROWS = 20
CHECK_P95 = "p95_within_sla"
CHECK_FAILURE_RATE = "failure_rate_within_threshold"


def _day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def _numbers(totals: dict[str, float | int | None]) -> dict[str, Any]:
    """Totals as numeric metadata (Plots); a figure that has no value that day (no synced routing: no p95) is
    left out rather than plotted as 0."""
    out: dict[str, Any] = {}
    for name, value in totals.items():
        if value is None:
            continue
        out[name] = dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(float(value))
    return out


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _table(df: pd.DataFrame, columns: list[tuple[str, str]]) -> dg.TableMetadataValue:
    records = [
        dg.TableRecord({name: _cell(row[name]) for name, _ in columns})
        for row in df.head(PREVIEW_ROWS).to_dict("records")
    ]
    return dg.MetadataValue.table(
        records=records, schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns])
    )


def _markdown(title: str, result: ReportResult, columns: list[str]) -> dg.MarkdownMetadataValue:
    start, end = day_bounds(result.day, result.timezone)
    lines = [
        f"**{title} for {result.day.isoformat()}** "
        f"({result.timezone}: {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC)",
        "",
        " · ".join(f"{k}: **{'-' if v is None else v}**" for k, v in result.totals.items()),
        "",
    ]
    if result.frame.empty:
        lines.append("_Nothing that day._")
    else:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in result.frame.head(PREVIEW_ROWS).to_dict("records"):
            lines.append(
                "| " + " | ".join("-" if _cell(row[c]) is None else str(_cell(row[c])) for c in columns) + " |"
            )
        if result.rows > PREVIEW_ROWS:
            lines.append(f"\n… {result.rows - PREVIEW_ROWS} more row(s) in the report table")
    return dg.MetadataValue.md("\n".join(lines))


def _check(name: str, verdict: SlaVerdict, unit: str) -> dg.AssetCheckResult:
    offenders = verdict.offenders
    listing = "\n".join(
        f"- **{o.company_name}** (`{o.partition_key}`, {o.provider}): {o.value:g}{unit} — {o.severity}"
        for o in offenders[:50]
    )
    return dg.AssetCheckResult(
        check_name=name,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR if verdict.severity == "ERROR" else dg.AssetCheckSeverity.WARN,
        metadata={
            "threshold": dg.MetadataValue.float(verdict.threshold),
            "error_threshold": dg.MetadataValue.float(verdict.error_threshold),
            "offenders": dg.MetadataValue.int(len(offenders)),
            "worst": dg.MetadataValue.float(offenders[0].value if offenders else 0.0),
            "offending_companies": dg.MetadataValue.md(listing or "none"),
            "offender_keys": dg.MetadataValue.text(", ".join(o.partition_key for o in offenders[:50])),
        },
        description=(
            f"{len(offenders)} compan{'y' if len(offenders) == 1 else 'ies'} over {verdict.threshold:g}{unit}: "
            + ", ".join(f"{o.company_name} ({o.value:g}{unit})" for o in offenders[:10])
            if offenders
            else f"every company within {verdict.threshold:g}{unit}"
        ),
    )


DELIVERY_PREVIEW = [
    ("company_name", "string"),
    ("partition_key", "string"),
    ("provider", "string"),
    ("routed", "int"),
    ("synced", "int"),
    ("failed", "int"),
    ("still_open", "int"),
    ("failure_rate", "float"),
    ("routed_to_synced_p50_s", "float"),
    ("routed_to_synced_p95_s", "float"),
    ("routed_to_synced_max_s", "float"),
    ("attempts_per_delivery", "float"),
    ("rate_limited_429", "int"),
    ("top_error_codes", "string"),
]
OUTCOME_PREVIEW = [
    ("company_name", "string"),
    ("technician_name", "string"),
    ("referred", "int"),
    ("delivered", "int"),
    ("accepted", "int"),
    ("completed", "int"),
    ("canceled_dismissed", "int"),
    ("revenue", "float"),
    ("conversion_rate", "float"),
    ("median_days_to_completion", "float"),
]


@dg.asset(
    partitions_def=daily_partitions,
    kinds={"pandas", "postgres"},
    group_name="reports",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_P95,
            asset="delivery_report",
            blocking=True,
            description="Every receiving company's routed → synced p95 that day is within DELIVERY_SLA_SECONDS "
            "(WARN over it, ERROR over SLA_ERROR_FACTOR times it); offenders named in the metadata.",
        ),
        dg.AssetCheckSpec(
            CHECK_FAILURE_RATE,
            asset="delivery_report",
            blocking=True,
            description="Every receiving company's failure rate (failed / finished) that day is within "
            "FAILURE_RATE_THRESHOLD (WARN over it, ERROR over SLA_ERROR_FACTOR times it).",
        ),
    ],
    description=(
        "Per day (REPORTING_TIMEZONE), receiving company and provider: the routings routed that day — routed, "
        "synced, failed, still open, routed → synced p50/p95/max, attempts per delivery, 429s, top error codes. "
        "Table report_delivery_daily (docs/reports.md)."
    ),
)
def delivery_report(
    context: dg.AssetExecutionContext, integration: IntegrationResource
) -> Iterator[dg.MaterializeResult[None]]:
    settings = integration.settings()
    with integration.session() as session:
        result = write_delivery_report(session, _day(context), settings.reporting_timezone)
    latency = latency_verdict(result.frame, settings.delivery_sla_seconds, settings.sla_error_factor)
    failures = failure_rate_verdict(result.frame, settings.failure_rate_threshold, settings.sla_error_factor)
    context.log.info(f"delivery_report {result.day}: {result.rows} row(s); {result.totals}")
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows),
            "timezone": result.timezone,
            **_numbers(result.totals),
            "preview": _table(result.frame, DELIVERY_PREVIEW),
            "summary": _markdown("Deliveries", result, [c for c, _ in DELIVERY_PREVIEW[:11]]),
        },
        check_results=[_check(CHECK_P95, latency, " s"), _check(CHECK_FAILURE_RATE, failures, "")],
    )
    errors = [o for v in (latency, failures) for o in v.offenders if o.severity == "ERROR"]
    if errors:  # the report is written; the run fails so that the run-failure alert names the offenders
        raise dg.Failure(
            description=(
                f"SLA breached on {result.day} (ERROR): "
                + "; ".join(f"{o.company_name} ({o.partition_key}) {o.value:g}" for o in errors[:20])
                + ". The report is written; see the checks' metadata."
            ),
            metadata={"offender_keys": ", ".join(o.partition_key for o in errors[:50])},
        )


@dg.asset(
    partitions_def=daily_partitions,
    kinds={"pandas", "postgres"},
    group_name="reports",
    description=(
        "Per day (REPORTING_TIMEZONE), referring company and technician: the referrals made that day — referred, "
        "delivered, accepted, completed, canceled/dismissed, revenue, conversion rate, median days to completion. "
        "Table report_referral_outcomes_daily (docs/reports.md)."
    ),
)
def referral_outcomes(
    context: dg.AssetExecutionContext, integration: IntegrationResource
) -> dg.MaterializeResult[None]:
    settings = integration.settings()
    with integration.session() as session:
        result = write_referral_outcomes(session, _day(context), settings.reporting_timezone)
    context.log.info(f"referral_outcomes {result.day}: {result.rows} row(s); {result.totals}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows),
            "timezone": result.timezone,
            **_numbers(result.totals),
            "preview": _table(result.frame, OUTCOME_PREVIEW),
            "summary": _markdown("Referral outcomes", result, [c for c, _ in OUTCOME_PREVIEW]),
        }
    )


report_assets = [delivery_report, referral_outcomes]

reports_job = dg.define_asset_job(
    "daily_reports",
    selection=dg.AssetSelection.assets(*report_assets),
    executor_def=dg.in_process_executor,
    description="Compute one day of both reports (the schedule: yesterday; backfills: any range, one run per day).",
)

reports_schedule = dg.build_schedule_from_partitioned_job(
    reports_job,
    name="daily_reports_schedule",
    hour_of_day=1,
    minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 01:30 in REPORTING_TIMEZONE, yesterday's delivery report and referral outcomes.",
)
