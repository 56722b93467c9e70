"""`GET /api/reports/deliveries|outcomes?from=&to=&page=`: the daily report tables, a date range, paged
(token-protected; docs/reports.md). Dates are reporting days (REPORTING_TIMEZONE), both ends included."""

from __future__ import annotations

from datetime import date
from typing import Annotated, TypeVar

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

R = TypeVar("R", DeliveryReportRow, OutcomeReportRow)


def _check_range(first: date, last: date) -> None:
    if last < first:
        raise InvalidInput.field(("query", "to"), f"'to' ({last}) is before 'from' ({first})")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise InvalidInput.field(("query", "to"), f"at most {MAX_RANGE_DAYS} days per request")


def _page(
    session: SessionDep, kind: ReportKind, row: type[R], first: date, last: date, page: int, size: int
) -> ReportPage[R]:
    _check_range(first, last)
    rows, total = read_report(session, kind, first, last, offset=(page - 1) * size, limit=size)
    # a row model known only at run time: mypy cannot check ``ReportPage[row]``
    return ReportPage[row](  # type: ignore[valid-type,return-value]
        report=kind,
        date_from=first,
        date_to=last,
        page=page,
        page_size=size,
        total=total,
        pages=-(-total // size),
        rows=[row.model_validate(r) for r in rows],
    )


@router.get("/deliveries", response_model=ReportPage[DeliveryReportRow])
def deliveries(
    session: SessionDep, date_from: From, date_to: To, page: PageNo = 1, page_size: PageSize = 100
) -> ReportPage[DeliveryReportRow]:
    """Per day, receiving company and provider: routed, synced, failed, still open, failure rate, routed → synced
    p50/p95/max, attempts per delivery, 429s, top error codes."""
    return _page(session, "deliveries", DeliveryReportRow, date_from, date_to, page, page_size)


@router.get("/outcomes", response_model=ReportPage[OutcomeReportRow])
def outcomes(
    session: SessionDep, date_from: From, date_to: To, page: PageNo = 1, page_size: PageSize = 100
) -> ReportPage[OutcomeReportRow]:
    """Per day, referring company and technician: referred, delivered, accepted, completed, canceled/dismissed,
    revenue, conversion rate, median days to completion."""
    return _page(session, "outcomes", OutcomeReportRow, date_from, date_to, page, page_size)
