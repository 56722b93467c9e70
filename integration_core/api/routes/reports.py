"""`GET /api/reports/deliveries|outcomes?from=&to=&page=`: the daily report tables, a date range, paged
(token-protected; docs/reports.md). Dates are reporting days (REPORTING_TIMEZONE), both ends included."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from integration_core.api.deps import SessionDep
from integration_core.errors import InvalidInput
from integration_core.reports.schemas import DeliveryReportRow, OutcomeReportRow, ReportPage
from integration_core.reports.store import ReportKind, read_report

router = APIRouter(prefix="/api/reports", tags=["reports"])

MAX_RANGE_DAYS = 366
PAGE_SIZE_MAX = 1000

From = Annotated[date, Query(alias="from", description="first reporting day (YYYY-MM-DD)")]
To = Annotated[date, Query(alias="to", description="last reporting day, included (YYYY-MM-DD)")]
PageNo = Annotated[int, Query(ge=1, le=1_000_000, description="page number, from 1")]
PageSize = Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX, description="rows per page")]


def _check_range(first: date, last: date) -> None:
    if last < first:
        raise InvalidInput.field(("query", "to"), f"'to' ({last}) is before 'from' ({first})")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise InvalidInput.field(("query", "to"), f"at most {MAX_RANGE_DAYS} days per request")


def _page(
    session: SessionDep, kind: ReportKind, first: date, last: date, page: int, size: int
) -> tuple[list[dict[str, Any]], int]:
    _check_range(first, last)
    return read_report(session, kind, first, last, offset=(page - 1) * size, limit=size)


@router.get("/deliveries", response_model=ReportPage[DeliveryReportRow])
def deliveries(
    session: SessionDep, date_from: From, date_to: To, page: PageNo = 1, page_size: PageSize = 100
) -> ReportPage[DeliveryReportRow]:
    """Per day, receiving company and provider: routed, synced, failed, still open, failure rate, routed → synced
    p50/p95/max, attempts per delivery, 429s, top error codes."""
    rows, total = _page(session, "deliveries", date_from, date_to, page, page_size)
    return ReportPage[DeliveryReportRow](
        report="deliveries",
        date_from=date_from,
        date_to=date_to,
        page=page,
        page_size=page_size,
        total=total,
        pages=-(-total // page_size),
        rows=[DeliveryReportRow.model_validate(r) for r in rows],
    )


@router.get("/outcomes", response_model=ReportPage[OutcomeReportRow])
def outcomes(
    session: SessionDep, date_from: From, date_to: To, page: PageNo = 1, page_size: PageSize = 100
) -> ReportPage[OutcomeReportRow]:
    """Per day, referring company and technician: referred, delivered, accepted, completed, canceled/dismissed,
    revenue, conversion rate, median days to completion."""
    rows, total = _page(session, "outcomes", date_from, date_to, page, page_size)
    return ReportPage[OutcomeReportRow](
        report="outcomes",
        date_from=date_from,
        date_to=date_to,
        page=page,
        page_size=page_size,
        total=total,
        pages=-(-total // page_size),
        rows=[OutcomeReportRow.model_validate(r) for r in rows],
    )
