"""Dead letters: `failed` routings, and the one way back (`retry`). Nothing else resets a routing."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from integration_core import audit
from integration_core.errors import InvalidInput

_RETRY = """
    UPDATE job_routings
       SET status = 'pending', attempts = 0, next_attempt_at = now()
     WHERE status = 'failed' {filters}
    RETURNING id
"""


def retry_failed(
    session: Session,
    *,
    routing_ids: list[uuid.UUID] | None = None,
    company_id: uuid.UUID | None = None,
    error_code: str | None = None,
    actor: str,
    reason: str | None = None,
) -> list[uuid.UUID]:
    """Return matching `failed` routings to `pending` (due now, attempts reset; `lookup_required` is kept, so a
    routing whose earlier request may have arrived is looked up before it is sent again). Audit-logged."""
    if not (routing_ids or company_id or error_code):
        raise InvalidInput.field(("filters",), "name routing ids, a company or an error code")
    filters: list[str] = []
    params: dict[str, Any] = {}
    if routing_ids:
        filters.append("AND id = ANY(:ids)")
        params["ids"] = routing_ids
    if company_id:
        filters.append("AND receiving_company_id = :company")
        params["company"] = company_id
    if error_code:
        filters.append("AND last_error_code = :code")
        params["code"] = error_code
    ids = [r[0] for r in session.execute(text(_RETRY.format(filters=" ".join(filters))), params).all()]
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
