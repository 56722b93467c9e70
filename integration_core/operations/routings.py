"""Routings as the operator surface reads them, shared by the HTTP API and `si`: the list and get queries, and
ORM rows → API shapes (`RoutingOut`, `RoutingDetailOut`, `JobOut`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from integration_core.db.models import Job, JobRouting
from integration_core.domain import RoutingStatus
from integration_core.errors import NotFound
from integration_core.schemas import (
    AddressOut,
    AttemptOut,
    HomeownerOut,
    JobOut,
    Page,
    RoutingDetailOut,
    RoutingOut,
)

# --------------------------------------------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------------------------------------------


def _filtered(status: RoutingStatus | None, company_id: uuid.UUID | None, error_code: str | None) -> Select[JobRouting]:
    query = select(JobRouting)
    if status is not None:
        query = query.where(JobRouting.status == RoutingStatus(status).value)
    if company_id is not None:
        query = query.where(JobRouting.receiving_company_id == company_id)
    if error_code:
        query = query.where(JobRouting.last_error_code == error_code)
    return query


def list_routings(
    session: Session,
    *,
    status: RoutingStatus | None = None,
    company_id: uuid.UUID | None = None,
    error_code: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[RoutingOut]:
    """Routings newest first (by `sequence`), filtered by status, receiving company and last error code (the
    filters combine); `status=failed` is the dead-letter view."""
    query = _filtered(status, company_id, error_code)
    rows = session.scalars(
        query.options(selectinload(JobRouting.receiving_company))
        .order_by(JobRouting.sequence.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [routing_out(r) for r in rows]


def routings_page(
    session: Session,
    *,
    limit: int,
    offset: int,
    status: RoutingStatus | None = None,
    company_id: uuid.UUID | None = None,
    error_code: str | None = None,
) -> Page[RoutingOut]:
    """`list_routings` with the total count of matching routings (the API's pages)."""
    query = _filtered(status, company_id, error_code)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = list_routings(
        session, status=status, company_id=company_id, error_code=error_code, limit=limit, offset=offset
    )
    return Page[RoutingOut](items=items, total=total, limit=limit, offset=offset)


def load_routing(session: Session, routing_id: uuid.UUID) -> JobRouting:
    """One routing with its company and attempts, as stored now (NotFound when there is none)."""
    routing = session.scalars(
        select(JobRouting)
        .where(JobRouting.id == routing_id)
        .options(selectinload(JobRouting.receiving_company), selectinload(JobRouting.attempts_log))
        .execution_options(populate_existing=True)  # as stored, even right after a change in this session
    ).one_or_none()
    if routing is None:
        raise NotFound("routing", routing_id)
    return routing


def get_routing(session: Session, routing_id: uuid.UUID) -> RoutingDetailOut:
    """One routing with every delivery attempt (lookups included); NotFound when there is none."""
    return routing_detail_out(load_routing(session, routing_id))


def routing_statuses(session: Session, routing_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The current status of each given routing that exists (unknown ids are absent)."""
    if not routing_ids:
        return {}
    rows = session.execute(select(JobRouting.id, JobRouting.status).where(JobRouting.id.in_(list(routing_ids))))
    return {rid: status for rid, status in rows.all()}


# --------------------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------------------


def routing_out(r: JobRouting) -> RoutingOut:
    out = RoutingOut.model_validate(r)
    out.receiving_company_name = r.receiving_company.name if r.receiving_company is not None else None
    return out


def routing_detail_out(r: JobRouting) -> RoutingDetailOut:
    base = routing_out(r).model_dump()
    return RoutingDetailOut(**base, attempts_log=[AttemptOut.model_validate(a) for a in r.attempts_log])


def job_out(job: Job, *, with_routings: bool = True) -> JobOut:
    return JobOut(
        id=job.id,
        summary=job.summary,
        address=AddressOut(
            street=job.street,
            unit=job.unit,
            city=job.city,
            state=job.state,
            zip_code=job.zip_code,
            country=job.country,
        ),
        homeowner=HomeownerOut(name=job.homeowner_name, phone=job.homeowner_phone, email=job.homeowner_email),
        created_by_company_id=job.created_by_company_id,
        created_by_technician_id=job.created_by_technician_id,
        category=job.category,
        required_skills=list(job.required_skills),
        skill_levels=dict(job.skill_levels),
        status=job.status,
        completed_at=job.completed_at,
        created_at=job.created_at,
        updated_at=job.updated_at,
        routings=[routing_out(r) for r in job.routings] if with_routings else [],
    )
