"""Jobs (referrals) and their routings."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from integration_core.api.deps import SessionDep, SettingsDep
from integration_core.db.models import Job, JobRouting, RoutingStatus
from integration_core.operations.routings import job_out, routing_out, routings_page
from integration_core.referrals import intake
from integration_core.schemas import JobCreate, JobOut, Page, RoutingOut, Text

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retrying with the same key returns the first job instead of creating another.",
    ),
]


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses={
        200: {"description": "replay of an earlier request with the same Idempotency-Key"},
        409: {"description": "Idempotency-Key reused with a different body"},
    },
)
def create_job(
    body: JobCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Take a referral: validate, match receiving companies, store the job and its routings atomically."""
    result = intake.create_job(session, body, idempotency_key=idempotency_key, top_n=settings.routing_top_n)
    if not result.created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return job_out(result.job)


@router.get("/", response_model=Page[JobOut])
def list_jobs(
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    status_: Annotated[Text | None, Query(alias="status", max_length=32)] = None,
    company_id: Annotated[uuid.UUID | None, Query(description="referring company")] = None,
) -> Page[JobOut]:
    query = select(Job)
    if status_:
        query = query.where(Job.status == status_)
    if company_id:
        query = query.where(Job.created_by_company_id == company_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = session.scalars(
        query.options(selectinload(Job.routings).selectinload(JobRouting.receiving_company))
        .order_by(Job.created_at.desc(), Job.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return Page[JobOut](items=[job_out(j) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/routings", response_model=Page[RoutingOut])
def list_all_routings(
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    status_: Annotated[RoutingStatus | None, Query(alias="status")] = None,
    company_id: Annotated[uuid.UUID | None, Query(description="receiving company")] = None,
) -> Page[RoutingOut]:
    """Every routing, newest first."""
    return routings_page(session, limit=limit, offset=offset, status=status_, company_id=company_id)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: uuid.UUID, session: SessionDep) -> JobOut:
    job = intake.load_job(session, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job_out(job)


@router.get("/{job_id}/routings", response_model=list[RoutingOut])
def get_job_routings(job_id: uuid.UUID, session: SessionDep) -> list[RoutingOut]:
    job = intake.load_job(session, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return [routing_out(r) for r in job.routings]
