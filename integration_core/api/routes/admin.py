"""The admin API: queues, the Dagster run queue, providers, rate limits, and management of companies, skills,
technicians and provider connections (so the service is usable without SQL). Token-protected.

Every change is audit-logged (`audit_log`, actor `api`) without secrets; provider secrets are write-only.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel

from integration_core.api.deps import SessionDep, SettingsDep
from integration_core.api.routes.jobs import Limit, Offset
from integration_core.errors import NotFound
from integration_core.operations import admin
from integration_core.operations import health as checks
from integration_core.referrals import directory
from integration_core.schemas import (
    ClearQueuesOut,
    CompanyCreate,
    CompanyDetailOut,
    CompanyOut,
    CompanyUpdate,
    ConnectionCreate,
    ConnectionOut,
    ConnectionUpdate,
    Page,
    ProviderOut,
    QueueStatsOut,
    RateLimitOut,
    SkillsReplace,
    TechnicianCreate,
    TechnicianOut,
)

router = APIRouter(prefix="/api/admin", tags=["admin"])

ACTOR = "api"
_404: dict[int | str, dict[str, Any]] = {404: {"description": "unknown company (or technician / connection)"}}
_DAGSTER_503: dict[int | str, dict[str, Any]] = {
    503: {"description": "dagster unavailable (the webserver cannot be reached); nothing was changed"}
}


# --- queues -------------------------------------------------------------------------------------------------


@router.get("/queue-stats", response_model=QueueStatsOut)
def queue_stats(
    session: SessionDep,
    settings: SettingsDep,
    company_id: Annotated[uuid.UUID | None, Query(description="only this receiving company")] = None,
) -> QueueStatsOut:
    """Routings by status per receiving company, the oldest pending routing's age, and Dagster's run queue
    (queued / in progress; `null` with `dagster_unavailable_reason` when the webserver cannot be reached)."""
    return admin.queue_stats(session, settings, company_id=company_id)


@router.post("/clear-queues", response_model=ClearQueuesOut, responses=_DAGSTER_503)
def clear_queues(session: SessionDep, settings: SettingsDep) -> ClearQueuesOut:
    """Cancel every queued Dagster run. Routings stay as they are: nothing is lost, pending work stays pending and
    the sensor requests fresh runs. Answers what was cancelled. Audit-logged."""
    return admin.clear_queues(session, settings, actor=ACTOR)


# --- providers and rate limits ------------------------------------------------------------------------------


@router.get("/providers", response_model=list[ProviderOut])
def providers(session: SessionDep, settings: SettingsDep) -> list[ProviderOut]:
    """Every provider connection: health, delivery mode, last success / failure. Secrets are never returned
    (`client_id` is masked; the client secret and app key are absent)."""
    return admin.list_providers(session, settings)


@router.get("/rate-limits", response_model=list[RateLimitOut])
def rate_limits(session: SessionDep, settings: SettingsDep) -> list[RateLimitOut]:
    """Per (provider, tenant): the rate in use, tokens available now, any Retry-After backoff, and the 429s
    seen in the last hour. The same PostgreSQL state every delivery run uses."""
    return admin.rate_limits(session, settings)


# --- companies ----------------------------------------------------------------------------------------------


@router.get("/companies", response_model=Page[CompanyOut])
def list_companies(
    session: SessionDep,
    limit: Limit = 500,
    offset: Offset = 0,
    active: Annotated[bool | None, Query(description="only active (true) or disabled (false) companies")] = None,
) -> Page[CompanyOut]:
    """Companies with their skills, service area (zip codes) and whether a provider is configured / enabled."""
    items, total = admin.list_companies(session, active=active, limit=limit, offset=offset)
    return Page[CompanyOut](items=items, total=total, limit=limit, offset=offset)


@router.post("/companies", status_code=status.HTTP_201_CREATED, response_model=CompanyDetailOut)
def create_company(body: CompanyCreate, session: SessionDep) -> CompanyDetailOut:
    """Create a company (with its skills and service area)."""
    company = directory.create_company(session, body, actor=ACTOR)
    return admin.get_company(session, company.id)


@router.get("/companies/{company_id}", response_model=CompanyDetailOut, responses=_404)
def get_company(company_id: uuid.UUID, session: SessionDep) -> CompanyDetailOut:
    """One company with its skills, technicians and provider summary."""
    return admin.get_company(session, company_id)


@router.patch("/companies/{company_id}", response_model=CompanyDetailOut, responses=_404)
def update_company(company_id: uuid.UUID, body: CompanyUpdate, session: SessionDep) -> CompanyDetailOut:
    """Change name, trade, service area, time zone or `active`; absent fields stay as they are."""
    directory.update_company(session, company_id, body, actor=ACTOR)
    session.expire_all()
    return admin.get_company(session, company_id)


@router.post("/companies/{company_id}/disable", response_model=CompanyDetailOut, responses=_404)
def disable_company(company_id: uuid.UUID, session: SessionDep) -> CompanyDetailOut:
    """Take the company out of matching (no new routings). Its existing routings keep going; disable its
    connection to hold them."""
    directory.set_company_active(session, company_id, False, actor=ACTOR)
    return admin.get_company(session, company_id)


@router.post("/companies/{company_id}/enable", response_model=CompanyDetailOut, responses=_404)
def enable_company(company_id: uuid.UUID, session: SessionDep) -> CompanyDetailOut:
    directory.set_company_active(session, company_id, True, actor=ACTOR)
    return admin.get_company(session, company_id)


@router.put("/companies/{company_id}/skills", response_model=CompanyDetailOut, responses=_404)
def replace_skills(company_id: uuid.UUID, body: SkillsReplace, session: SessionDep) -> CompanyDetailOut:
    """Replace the company's skill list (skill, level basic|intermediate|expert, primary)."""
    directory.replace_skills(session, company_id, body.skills, actor=ACTOR)
    session.expire_all()
    return admin.get_company(session, company_id)


# --- technicians --------------------------------------------------------------------------------------------


@router.get("/companies/{company_id}/technicians", response_model=list[TechnicianOut], responses=_404)
def list_technicians(company_id: uuid.UUID, session: SessionDep) -> list[TechnicianOut]:
    return admin.get_company(session, company_id).technician_list


@router.post(
    "/companies/{company_id}/technicians",
    status_code=status.HTTP_201_CREATED,
    response_model=TechnicianOut,
    responses=_404,
)
def add_technician(company_id: uuid.UUID, body: TechnicianCreate, session: SessionDep) -> TechnicianOut:
    tech = directory.add_technician(session, company_id, body, actor=ACTOR)
    session.refresh(tech)
    return TechnicianOut.model_validate(tech)


@router.post(
    "/companies/{company_id}/technicians/{technician_id}/disable", response_model=TechnicianOut, responses=_404
)
def disable_technician(company_id: uuid.UUID, technician_id: uuid.UUID, session: SessionDep) -> TechnicianOut:
    """A disabled technician can no longer refer work; their earlier referrals are kept."""
    tech = directory.set_technician_active(session, company_id, technician_id, False, actor=ACTOR)
    session.refresh(tech)
    return TechnicianOut.model_validate(tech)


@router.post("/companies/{company_id}/technicians/{technician_id}/enable", response_model=TechnicianOut, responses=_404)
def enable_technician(company_id: uuid.UUID, technician_id: uuid.UUID, session: SessionDep) -> TechnicianOut:
    tech = directory.set_technician_active(session, company_id, technician_id, True, actor=ACTOR)
    session.refresh(tech)
    return TechnicianOut.model_validate(tech)


# --- provider connection ------------------------------------------------------------------------------------


class ConnectionToggleOut(BaseModel):
    connection: ConnectionOut
    routings_moved: int


class ConnectionCheckOut(BaseModel):
    connection_id: uuid.UUID
    company_id: uuid.UUID
    provider: str
    account_id: str
    health: str
    checked_at: str | None
    error_code: str | None
    error: str | None


def _conn_out(session: SessionDep, settings: SettingsDep, company_id: uuid.UUID) -> ConnectionOut:
    conn = directory.company_connection(session, company_id)
    session.refresh(conn)
    return directory.connection_out(conn, settings.secret_key.get_secret_value())


@router.get("/companies/{company_id}/connection", response_model=ConnectionOut, responses=_404)
def get_connection(company_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> ConnectionOut:
    """The company's provider connection: its provider's settings and, per secret, whether it is set (secrets are
    never returned, not even masked)."""
    return _conn_out(session, settings, company_id)


@router.put(
    "/companies/{company_id}/connection",
    response_model=ConnectionOut,
    responses={**_404, 201: {"model": ConnectionOut, "description": "created"}},
)
def put_connection(
    company_id: uuid.UUID, body: ConnectionCreate, session: SessionDep, settings: SettingsDep, response: Response
) -> ConnectionOut:
    """Create or replace the company's connection to `provider` (`servicetitan`, the default, or
    `housecallpro`), credentials included (write-only: stored encrypted with SECRET_KEY, never returned). Outside
    the sandbox environment `base_url` must be one of the provider's own hosts; in it, loopback. Enabling moves the
    company's `no_integration` routings to `pending`."""
    existed = True
    try:
        directory.company_connection(session, company_id)
    except NotFound:
        existed = False
    directory.upsert_connection(
        session, company_id, body, secret_key=settings.secret_key.get_secret_value(), actor=ACTOR
    )
    if not existed:
        response.status_code = status.HTTP_201_CREATED
    return _conn_out(session, settings, company_id)


@router.patch("/companies/{company_id}/connection", response_model=ConnectionOut, responses=_404)
def patch_connection(
    company_id: uuid.UUID, body: ConnectionUpdate, session: SessionDep, settings: SettingsDep
) -> ConnectionOut:
    """Change non-secret settings (mode, the provider's ids, rate...). Credentials are replaced only with PUT; the
    provider cannot change."""
    directory.update_connection(session, company_id, body, actor=ACTOR)
    return _conn_out(session, settings, company_id)


def _toggle(session: SessionDep, settings: SettingsDep, company_id: uuid.UUID, enabled: bool) -> ConnectionToggleOut:
    conn = directory.company_connection(session, company_id)
    moved = directory.set_connection_enabled(session, conn, enabled, actor=ACTOR)
    return ConnectionToggleOut(connection=_conn_out(session, settings, company_id), routings_moved=moved)


@router.post("/companies/{company_id}/connection/enable", response_model=ConnectionToggleOut, responses=_404)
def enable_connection(company_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> ConnectionToggleOut:
    """Enable: the company's `no_integration` routings become `pending` (due now)."""
    return _toggle(session, settings, company_id, True)


@router.post("/companies/{company_id}/connection/disable", response_model=ConnectionToggleOut, responses=_404)
def disable_connection(company_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> ConnectionToggleOut:
    """Disable: the company's `pending` routings move to `no_integration` (claimed ones finish their run)."""
    return _toggle(session, settings, company_id, False)


@router.post("/companies/{company_id}/connection/test", response_model=ConnectionCheckOut, responses=_404)
def test_connection(
    company_id: uuid.UUID, session: SessionDep, settings: SettingsDep, request: Request
) -> ConnectionCheckOut:
    """Check the connection now (token + a cheap read, ignoring the health cache) and store the result."""
    conn = directory.company_connection(session, company_id)
    [result] = checks.check_connections(request.app.state.engine, settings, connection_ids=[conn.id], force=True)
    return ConnectionCheckOut(
        connection_id=result.connection_id,
        company_id=result.company_id,
        provider=result.provider,
        account_id=result.account_id,
        health=result.health,
        checked_at=result.checked_at.isoformat() if result.checked_at else None,
        error_code=result.error_code,
        error=result.error,
    )
