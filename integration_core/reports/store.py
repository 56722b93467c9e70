"""Reading the report tables back (the API and `si report`): a date range, paged, oldest day first."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from integration_core.db.models import ReportDeliveryDaily, ReportReferralOutcomesDaily

__all__ = ["ReportKind", "read_report"]

ReportKind = Literal["deliveries", "outcomes"]

_MODELS: dict[str, Any] = {"deliveries": ReportDeliveryDaily, "outcomes": ReportReferralOutcomesDaily}
_ORDER: dict[str, tuple[str, ...]] = {
    "deliveries": ("day", "company_name", "provider", "receiving_company_id"),
    "outcomes": ("day", "company_name", "technician_name", "technician_id"),
}


def read_report(
    session: Session, kind: ReportKind, first: date, last: date, *, offset: int = 0, limit: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Rows of the `kind` report for days `first`..`last` (both included) and how many there are in all."""
    model = _MODELS[kind]
    where = (model.day >= first, model.day <= last)
    total = int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)
    stmt = select(model).where(*where).order_by(*(getattr(model, c) for c in _ORDER[kind])).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    columns = [c.name for c in model.__table__.columns]
    objs: list[Any] = list(session.scalars(stmt))
    rows = [{c: getattr(obj, c) for c in columns} for obj in objs]
    return rows, total
