"""Dead letters: `failed` routings, and the one way back (`retry`). Nothing else resets a routing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from integration_core import audit
from integration_core.domain import RoutingStatus
from integration_core.errors import InvalidInput

# The one definition of which dead letters a retry takes: `failed`, narrowed by ids and/or receiving company and/or
# last error code (the filters combine). `failed_matching` (what a retry would take) and `retry_failed` share it.
_WHERE = f"WHERE status = '{RoutingStatus.failed}' {{filters}}"
_MATCHING = f"SELECT id FROM job_routings {_WHERE} ORDER BY sequence"
_RETRY = f"""
    UPDATE job_routings
       SET status = '{RoutingStatus.pending}', attempts = 0, next_attempt_at = now()
     {_WHERE}
    RETURNING id
"""


def _filters(
    routing_ids: Sequence[uuid.UUID] | None, company_id: uuid.UUID | None, error_code: str | None
) -> tuple[str, dict[str, Any]]:
    if not (routing_ids or company_id or error_code):
        raise InvalidInput.field(("filters",), "name routing ids, a company or an error code")
    filters: list[str] = []
    params: dict[str, Any] = {}
    if routing_ids:
        filters.append("AND id = ANY(:ids)")
        params["ids"] = list(routing_ids)
    if company_id:
        filters.append("AND receiving_company_id = :company")
        params["company"] = company_id
    if error_code:
        filters.append("AND last_error_code = :code")
        params["code"] = error_code
    return " ".join(filters), params


def failed_matching(
    session: Session,
    *,
    routing_ids: Sequence[uuid.UUID] | None = None,
    company_id: uuid.UUID | None = None,
    error_code: str | None = None,
) -> list[uuid.UUID]:
    """The `failed` routings a `retry_failed` with the same filters would take now, oldest first (changes nothing)."""
    filters, params = _filters(routing_ids, company_id, error_code)
    return [r[0] for r in session.execute(text(_MATCHING.format(filters=filters)), params).all()]


def retry_failed(
    session: Session,
    *,
    routing_ids: Sequence[uuid.UUID] | None = None,
    company_id: uuid.UUID | None = None,
    error_code: str | None = None,
    actor: str,
    reason: str | None = None,
) -> list[uuid.UUID]:
    """Return matching `failed` routings to `pending` (due now, attempts reset; `lookup_required` is kept, so a
    routing whose earlier request may have arrived is looked up before it is sent again). Audit-logged."""
    filters, params = _filters(routing_ids, company_id, error_code)
    ids = [r[0] for r in session.execute(text(_RETRY.format(filters=filters)), params).all()]
    if ids:
        audit.record(
            session,
            actor=actor,
            action="routings.retried",
            entity_type="job_routing",
            entity_id=ids[0] if len(ids) == 1 else None,
            details={
                "count": len(ids),
                "routing_ids": [str(i) for i in ids[:1000]],
                "company_id": str(company_id) if company_id else None,
                "error_code": error_code,
                "reason": reason,
            },
        )
    return ids
