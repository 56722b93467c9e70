"""Daily reports (pandas; never imports dagster): what was delivered where and how fast, and what the referrals
became. Computed from the service's tables, written to `report_delivery_daily` and
`report_referral_outcomes_daily` (docs/reports.md)."""

from integration_core.reports.daily import (
    ReportResult,
    delivery_report,
    referral_outcomes,
    write_delivery_report,
    write_referral_outcomes,
)
from integration_core.reports.days import day_bounds, days_between

__all__ = [
    "ReportResult",
    "day_bounds",
    "days_between",
    "delivery_report",
    "referral_outcomes",
    "write_delivery_report",
    "write_referral_outcomes",
]
