"""Dry run of one routing: what the next delivery run would do with it, and the exact bodies it would send.

Shared by `POST /api/routings/{id}/dry-run` and `si dry-run ID`. Nothing is sent and nothing is written: the
routing, its job and its company's connection are read, the provider's own mapping functions
(`providers/servicetitan/mapping.py`) render the bodies exactly as the client serialises them, and the
engine's rules (`delivery/engine.py`: claim → lookup when required → deliver) give the decision.

The connection's credentials are never decrypted here: the rendered requests carry the method, URL and body;
the `Authorization` and `ST-App-Key` headers the client adds are shown as `[redacted]`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from integration_core.db.models import Company, Job, JobRouting, ProviderConnection, RoutingStatus
from integration_core.delivery.connections import connection_config
from integration_core.errors import NotFound
from integration_core.providers.base import REDACTED, ConnectionConfig, DeliveryRequest
from integration_core.schemas import DryRunOut, PlannedRequestOut
from integration_core.settings import Settings

CUSTOMER_ID_PLACEHOLDER = "{customerId}"
LOCATION_ID_PLACEHOLDER = "{locationId}"
HEADERS = {"Authorization": f"Bearer {REDACTED}", "ST-App-Key": REDACTED, "Content-Type": "application/json"}


def _planned(operation: str, method: str, url: str, when: str, **rest: Any) -> PlannedRequestOut:
    return PlannedRequestOut(operation=operation, method=method, url=url, when=when, **rest)


def delivery_request(routing: JobRouting, job: Job, referrer_name: str | None) -> DeliveryRequest:
    """The request the engine builds when it claims this routing (delivery/engine.py `claim`)."""
    return DeliveryRequest(
        routing_id=routing.id,
        summary=job.summary,
        street=job.street,
        unit=job.unit,
        city=job.city,
        state=job.state,
        zip=job.zip_code,
        country=job.country,
        homeowner_name=job.homeowner_name,
        homeowner_phone=job.homeowner_phone,
        homeowner_email=job.homeowner_email,
        category=job.category,
        referring_company_name=referrer_name,
        created_at=routing.created_at,
    )


def _body(model: Any) -> dict[str, Any]:
    # exactly as ServiceTitanClient.request serialises bodies
    body: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def _servicetitan_requests(
    request: DeliveryRequest, config: ConnectionConfig, *, lookup: bool, now: datetime
) -> list[PlannedRequestOut]:
    from integration_core.providers.servicetitan import mapping
    from integration_core.providers.servicetitan.client import api_base_for

    base = f"{api_base_for(config)}"

    def path(module: str, resource: str) -> str:
        return f"{base}/{module}/v2/tenant/{config.tenant_id}/{resource}"

    planned: list[PlannedRequestOut] = []
    get_headers = {k: v for k, v in HEADERS.items() if k != "Content-Type"}
    if config.delivery_mode == "booking":
        url = path("crm", f"booking-provider/{config.booking_provider_id}/bookings")
        if lookup:
            planned.append(
                _planned(
                    "find_existing",
                    "GET",
                    url,
                    "first: an earlier attempt's outcome is unknown, so the booking is looked up by its marker",
                    params={"externalId": request.marker, "page": "1", "pageSize": "50"},
                    headers=get_headers,
                )
            )
        planned.append(
            _planned(
                "create_booking",
                "POST",
                url,
                "only if the lookup found nothing" if lookup else "always",
                headers=dict(HEADERS),
                body=_body(mapping.booking_body(request, config)),
            )
        )
        return planned

    if lookup:
        planned.append(
            _planned(
                "find_existing",
                "GET",
                path("jpm", "jobs"),
                "first: an earlier attempt's outcome is unknown, so the job is looked up by its externalData marker",
                params={
                    "externalDataApplicationGuid": str(config.external_data_guid),
                    "externalDataKey": mapping.MARKER_KEY,
                    "externalDataValues": request.marker,
                },
                headers=get_headers,
            )
        )
    then = "if the lookup found nothing: " if lookup else ""
    planned.append(
        _planned(
            "find_customer",
            "GET",
            path("crm", "customers"),
            f"{then}look for the homeowner among existing customers (by phone, then by name and address or e-mail)",
            headers=get_headers,
        )
    )
    planned.append(
        _planned(
            "create_customer",
            "POST",
            path("crm", "customers"),
            f"{then}only if no existing customer matches (the service address becomes its location)",
            headers=dict(HEADERS),
            body=_body(mapping.customer_body(request)),
        )
    )
    location = _body(mapping.location_body(request, 0))
    location["customerId"] = CUSTOMER_ID_PLACEHOLDER
    planned.append(
        _planned(
            "create_location",
            "POST",
            path("crm", "locations"),
            f"{then}only if the matched customer has no active location at the service address",
            headers=dict(HEADERS),
            body=location,
        )
    )
    job = _body(mapping.job_body(request, config, customer_id=0, location_id=0, now=now))
    job["customerId"] = CUSTOMER_ID_PLACEHOLDER
    job["locationId"] = LOCATION_ID_PLACEHOLDER
    planned.append(
        _planned(
            "create_job",
            "POST",
            path("jpm", "jobs"),
            "only if the lookup found nothing" if lookup else "always",
            headers=dict(HEADERS),
            body=job,
        )
    )
    return planned


def dry_run(session: Session, routing_id: uuid.UUID, settings: Settings, *, now: datetime | None = None) -> DryRunOut:
    """What the next delivery run would do with this routing. Reads only; sends nothing. Raises NotFound."""
    now = now or datetime.now(UTC)
    routing = session.get(JobRouting, routing_id)
    if routing is None:
        raise NotFound("routing", routing_id)
    job = session.get(Job, routing.job_id)
    assert job is not None  # foreign key
    referrer = session.get(Company, job.created_by_company_id)
    conn = session.scalars(
        select(ProviderConnection)
        .where(ProviderConnection.company_id == routing.receiving_company_id)
        .order_by(ProviderConnection.enabled.desc(), ProviderConnection.provider)
    ).first()
    status = routing.status
    lookup = routing.lookup_required or status == RoutingStatus.needs_reconcile.value
    due = routing.next_attempt_at <= now
    max_attempts = settings.delivery_max_attempts

    requests: list[PlannedRequestOut] = []
    connection: dict[str, Any] | None = None
    missing: dict[str, list[str]] = {}
    if conn is not None:
        config = connection_config(conn, None)
        missing = config.missing_settings()
        connection = {
            "connection_id": str(conn.id),
            "provider": conn.provider,
            "environment": conn.environment,
            "tenant_id": conn.tenant_id,
            "delivery_mode": conn.delivery_mode,
            "enabled": conn.enabled,
            "health": conn.health,
        }
        if not missing:
            request = delivery_request(routing, job, referrer.name if referrer else None)
            requests = _servicetitan_requests(request, config, lookup=lookup, now=now)

    would_send = False
    if conn is None or not conn.enabled:
        decision = (
            "no enabled provider connection: the routing waits in no_integration; enabling a connection for "
            "the company returns it to pending"
        )
    elif missing:
        fields = "; ".join(f"{k}: {', '.join(v)}" for k, v in missing.items())
        decision = f"the connection is misconfigured ({fields}): a run would fail this routing without sending"
    elif status == RoutingStatus.synced.value:
        decision = f"already delivered as {routing.external_id}: nothing would be sent again"
    elif status == RoutingStatus.claimed.value:
        decision = (
            f"a run ({routing.lease_owner}) holds it until {routing.lease_expires_at}: its outcome decides; "
            "nothing more would be sent by another run"
        )
    elif status == RoutingStatus.failed.value:
        decision = (
            f"failed ({routing.last_error_code}): nothing is sent until it is retried; after a retry the run "
            + ("looks it up first, then " if lookup else "")
            + "sends the requests shown"
        )
    elif status == RoutingStatus.no_integration.value:
        decision = "in no_integration: nothing is sent until the company's connection is enabled again"
    elif lookup and routing.attempts >= max_attempts:
        decision = (
            f"looked up first; if not found at the provider it fails as attempts_exhausted "
            f"({routing.attempts}/{max_attempts} attempts used) instead of being sent again"
        )
    else:
        would_send = True
        when = "the next run" if due else f"the first run after {routing.next_attempt_at.isoformat()}"
        decision = (
            f"{when} looks the marker up first and sends only if nothing is found at the provider"
            if lookup
            else f"{when} sends it (no earlier request can have reached the provider)"
        )

    placeholders: dict[str, str] = {}
    if conn is not None and conn.delivery_mode == "job" and requests:
        placeholders = {
            CUSTOMER_ID_PLACEHOLDER: "id of the matched or created customer",
            LOCATION_ID_PLACEHOLDER: "id of the matched or created location",
        }
    return DryRunOut(
        routing_id=routing.id,
        status=status,
        receiving_company_id=routing.receiving_company_id,
        delivery_mode=conn.delivery_mode if conn is not None else None,
        attempts=routing.attempts,
        max_attempts=max_attempts,
        next_attempt_at=routing.next_attempt_at,
        due_now=due,
        lookup_required=lookup,
        would_send=would_send,
        decision=decision,
        connection=connection,
        requests=requests,
        placeholders=placeholders,
    )
