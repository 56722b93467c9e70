"""ORM rows → API shapes."""

from __future__ import annotations

from integration_core.db.models import Job, JobRouting
from integration_core.schemas import (
    AddressOut,
    AttemptOut,
    HomeownerOut,
    JobOut,
    RoutingDetailOut,
    RoutingOut,
)


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
