"""Referral intake: validate, match, and store a job with its routings in one transaction.

A job is never dropped: with no matching company it is stored as `unmatched` (`si jobs rematch` retries).
The same `Idempotency-Key` from the same referrer returns the first job, even under concurrent requests
(a transaction-scoped advisory lock on (referrer, key) serialises them).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, selectinload

from integration_core import audit
from integration_core.db.models import Company, Job, JobRouting, JobStatus, RoutingStatus, Technician
from integration_core.errors import Conflict, InvalidInput
from integration_core.referrals.matching import Match, match_job
from integration_core.schemas import JobCreate


@dataclass(frozen=True)
class IntakeResult:
    job: Job
    created: bool  # False: an earlier job with the same Idempotency-Key was returned


def fingerprint(data: JobCreate) -> str:
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _validate_referrer(session: Session, data: JobCreate) -> None:
    company = session.get(Company, data.created_by_company_id)
    if company is None:
        raise InvalidInput.field(("body", "created_by_company_id"), "company not found")
    if not company.active:
        raise InvalidInput.field(("body", "created_by_company_id"), "company is not active")
    tech = session.get(Technician, data.created_by_technician_id)
    if tech is None:
        raise InvalidInput.field(("body", "created_by_technician_id"), "technician not found")
    if tech.company_id != company.id:
        raise InvalidInput.field(
            ("body", "created_by_technician_id"), "technician does not belong to the referring company"
        )
    if not tech.active:
        raise InvalidInput.field(("body", "created_by_technician_id"), "technician is not active")


def load_job(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.scalars(
        select(Job)
        .where(Job.id == job_id)
        .options(selectinload(Job.routings).selectinload(JobRouting.receiving_company))
    ).one_or_none()


def add_routings(session: Session, job: Job, matches: list[Match]) -> list[JobRouting]:
    routings = [
        JobRouting(
            job_id=job.id,
            receiving_company_id=m.company_id,
            match_score=m.score,
            match_reasons=m.reason_text,
            status=(RoutingStatus.pending if m.connected else RoutingStatus.no_integration).value,
        )
        for m in matches
    ]
    session.add_all(routings)
    job.status = (JobStatus.routed if routings else JobStatus.unmatched).value
    session.flush()
    return routings


def _match(session: Session, job: Job, top_n: int) -> list[Match]:
    """Receiving companies for a stored job (at intake and when unmatched jobs are matched again)."""
    return match_job(
        session,
        zip_code=job.zip_code[:5],
        referrer_id=job.created_by_company_id,
        skills=list(job.required_skills),
        levels=dict(job.skill_levels),
        category=job.category,
        top_n=top_n,
    )


def create_job(
    session: Session, data: JobCreate, *, idempotency_key: str | None, top_n: int, actor: str = "api"
) -> IntakeResult:
    """Store the job and its routings in the caller's transaction (which the caller commits)."""
    _validate_referrer(session, data)
    digest = fingerprint(data)
    if idempotency_key is not None:
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"job-intake:{data.created_by_company_id}:{idempotency_key}"},
        )
        existing_id = session.scalar(
            select(Job.id).where(
                Job.created_by_company_id == data.created_by_company_id,
                Job.idempotency_key == idempotency_key,
            )
        )
        if existing_id is not None:
            existing = load_job(session, existing_id)
            assert existing is not None
            if existing.idempotency_fingerprint != digest:
                raise Conflict("Idempotency-Key was already used by this company for a different referral")
            return IntakeResult(existing, created=False)

    job = Job(
        summary=data.summary,
        street=data.address.street,
        unit=data.address.unit,
        city=data.address.city,
        state=data.address.state,
        zip_code=data.address.zip_code,
        country=data.address.country,
        homeowner_name=data.homeowner.name,
        homeowner_phone=data.homeowner.phone,
        homeowner_email=str(data.homeowner.email) if data.homeowner.email else None,
        created_by_company_id=data.created_by_company_id,
        created_by_technician_id=data.created_by_technician_id,
        category=data.category,
        required_skills=data.required_skills,
        skill_levels={k: v.value for k, v in data.skill_levels.items()},
        idempotency_key=idempotency_key,
        idempotency_fingerprint=digest if idempotency_key else None,
    )
    session.add(job)
    session.flush()
    matches = _match(session, job, top_n)
    add_routings(session, job, matches)
    audit.record(
        session,
        actor=actor,
        action="job.created",
        entity_type="job",
        entity_id=job.id,
        details={"routings": len(matches), "status": job.status},
    )
    loaded = load_job(session, job.id)
    assert loaded is not None
    return IntakeResult(loaded, created=True)


def rematch(
    session: Session, *, top_n: int, job_ids: list[uuid.UUID] | None = None, actor: str = "cli"
) -> dict[str, int]:
    """Match `unmatched` jobs again (e.g. after a company extended its service area)."""
    query = (
        select(Job)
        .where(Job.status == JobStatus.unmatched.value)
        .order_by(Job.created_at)
        .with_for_update(skip_locked=True)
    )
    if job_ids:
        query = query.where(Job.id.in_(job_ids))
    routed = still_unmatched = 0
    for job in session.scalars(query).all():
        matches = _match(session, job, top_n)
        if matches:
            add_routings(session, job, matches)
            audit.record(
                session,
                actor=actor,
                action="job.rematched",
                entity_type="job",
                entity_id=job.id,
                details={"routings": len(matches)},
            )
            routed += 1
        else:
            still_unmatched += 1
    return {"routed": routed, "unmatched": still_unmatched}


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: n for status, n in rows}
