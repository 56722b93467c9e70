"""Routings: one receiving company's delivery of a job; retries of dead letters and dry runs."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from integration_core.api.deps import SessionDep, SettingsDep
from integration_core.api.routes.jobs import Limit, Offset
from integration_core.db.models import RoutingStatus
from integration_core.delivery.dryrun import dry_run as core_dry_run
from integration_core.delivery.retry import retry_failed
from integration_core.operations.routings import get_routing as core_get_routing
from integration_core.operations.routings import load_routing, routing_detail_out, routings_page
from integration_core.schemas import DryRunOut, Page, RetryOut, RetryRequest, RoutingDetailOut, RoutingOut

router = APIRouter(prefix="/api/routings", tags=["routings"])

ACTOR = "api"


@router.get("/status/{status_}", response_model=Page[RoutingOut])
def routings_by_status(
    status_: RoutingStatus,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    company_id: Annotated[uuid.UUID | None, Query(description="receiving company")] = None,
) -> Page[RoutingOut]:
    """Routings in one state (`failed` is the dead-letter view, with the provider's error)."""
    return routings_page(session, limit=limit, offset=offset, status=status_, company_id=company_id)


@router.get("/{routing_id}", response_model=RoutingDetailOut)
def get_routing(routing_id: uuid.UUID, session: SessionDep) -> RoutingDetailOut:
    """One routing with its delivery attempts."""
    return core_get_routing(session, routing_id)  # NotFound → 404


@router.post("/retry", response_model=RetryOut)
def retry_bulk(body: RetryRequest, session: SessionDep) -> RetryOut:
    """Return `failed` routings to `pending` (due now, attempts reset), chosen by ids and/or receiving company
    and/or error code (the filters combine). A routing whose earlier request may have arrived is looked up at the
    provider before it is sent again. Audit-logged."""
    ids = retry_failed(
        session,
        routing_ids=body.routing_ids,
        company_id=body.company_id,
        error_code=body.error_code,
        actor=ACTOR,
        reason=body.reason,
    )
    return RetryOut(retried=len(ids), routing_ids=ids)


@router.post(
    "/{routing_id}/retry",
    response_model=RoutingDetailOut,
    responses={404: {"description": "unknown routing"}, 409: {"description": "the routing is not failed"}},
)
def retry_one(routing_id: uuid.UUID, session: SessionDep) -> RoutingDetailOut:
    """Return one `failed` routing to `pending` (409 for any other status). Audit-logged."""
    routing = load_routing(session, routing_id)
    if routing.status != RoutingStatus.failed.value:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"routing {routing_id} is {routing.status}; only failed routings can be retried"
        )
    if not retry_failed(session, routing_ids=[routing_id], actor=ACTOR):
        raise HTTPException(status.HTTP_409_CONFLICT, f"routing {routing_id} changed status meanwhile; look again")
    return routing_detail_out(load_routing(session, routing_id))


@router.post("/{routing_id}/dry-run", response_model=DryRunOut, responses={404: {"description": "unknown routing"}})
def dry_run(routing_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> DryRunOut:
    """What the next delivery run would do with this routing: the de-duplication decision (look up first or
    not, send or not) and the exact requests and bodies it would send. Sends nothing, changes nothing; the
    provider credentials are never included."""
    return core_dry_run(session, routing_id, settings)
