"""What the API and `si report` return for the report tables (pydantic)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["DeliveryReportRow", "OutcomeReportRow", "ReportPage"]


class DeliveryReportRow(BaseModel):
    """One day, receiving company and provider of `report_delivery_daily` (docs/reports.md)."""

    model_config = ConfigDict(from_attributes=True)

    day: date
    receiving_company_id: uuid.UUID
    provider: str
    partition_key: str
    company_name: str
    routed: int
    synced: int
    failed: int
    still_open: int
    failure_rate: float | None
    routed_to_synced_p50_s: float | None
    routed_to_synced_p95_s: float | None
    routed_to_synced_max_s: float | None
    attempts: int
    attempts_per_delivery: float | None
    rate_limited_429: int
    top_error_codes: str
    timezone: str
    computed_at: datetime


class OutcomeReportRow(BaseModel):
    """One day, referring company and technician of `report_referral_outcomes_daily` (docs/reports.md)."""

    model_config = ConfigDict(from_attributes=True)

    day: date
    referring_company_id: uuid.UUID
    technician_id: uuid.UUID
    partition_key: str
    company_name: str
    technician_name: str
    referred: int
    delivered: int
    accepted: int
    completed: int
    canceled_dismissed: int
    revenue: Decimal
    conversion_rate: float | None
    median_days_to_completion: float | None
    timezone: str
    computed_at: datetime


RowT = TypeVar("RowT", DeliveryReportRow, OutcomeReportRow)


class ReportPage(BaseModel, Generic[RowT]):
    report: Literal["deliveries", "outcomes"]
    date_from: date
    date_to: date
    page: int
    page_size: int
    total: int  # rows in the whole range
    pages: int
    rows: list[RowT]
