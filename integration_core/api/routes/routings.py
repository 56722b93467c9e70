"""Routings: one receiving company's delivery of a job."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from integration_core.api.deps import SessionDep
from integration_core.api.routes.jobs import Limit, Offset, routings_page
from integration_core.api.views import routing_detail_out
from integration_core.db.models import JobRouting, RoutingStatus
from integration_core.schemas import Page, RoutingDetailOut, RoutingOut

router = APIRouter(prefix="/api/routings", tags=["routings"])


@router.get("/status/{status_}", response_model=Page[RoutingOut])
def routings_by_status(
    status_: RoutingStatus,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    company_id: Annotated[uuid.UUID | None, Query(description="receiving company")] = None,
) -> Page[RoutingOut]:
    """Routings in one state (`failed` is the dead-letter view, with the provider's error)."""
    return routings_page(session, limit=limit, offset=offset, status_=status_, company_id=company_id)


@router.get("/{routing_id}", response_model=RoutingDetailOut)
def get_routing(routing_id: uuid.UUID, session: SessionDep) -> RoutingDetailOut:
    """One routing with its delivery attempts."""
    routing = session.scalars(
        select(JobRouting)
        .where(JobRouting.id == routing_id)
        .options(selectinload(JobRouting.receiving_company), selectinload(JobRouting.attempts_log))
    ).one_or_none()
    if routing is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"routing {routing_id} not found")
    return routing_detail_out(routing)
