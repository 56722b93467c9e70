"""Dry run of one routing: what the next delivery run would do with it, and the exact bodies it would send.

Shared by `POST /api/routings/{id}/dry-run` and `si dry-run ID`. Nothing is sent and nothing is written: the
routing, its job and its company's connection are read; the decision is `delivery/decide.py`'s `next_action`,
the same function the engine follows; the requests are rendered by the connection's own provider
(`Provider.plan_delivery`, e.g. `providers/servicetitan/provider.py`) exactly as its client serialises them.

The connection's credentials are never decrypted here: the rendered requests carry the method, URL and body;
credentials in headers are shown as `[redacted]`.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from integration_core.db.models import Company, Job, JobRouting, ProviderConnection
from integration_core.delivery.connections import connection_config
from integration_core.delivery.decide import Action, ConnectionState, RoutingState, next_action
from integration_core.domain import DUE_ROUTING_STATUSES, RoutingStatus
from integration_core.errors import NotFound
from integration_core.providers import registry
from integration_core.providers.base import DeliveryPlan, DeliveryRequest, Provider
from integration_core.schemas import DryRunOut, PlannedRequestOut
from integration_core.settings import Settings


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


def _close(provider: Provider) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(provider.aclose())
    else:  # called from a running loop: it closes the provider's (unused) HTTP client when it gets to it
        asyncio.get_running_loop().create_task(provider.aclose())


def plan(config: Any, request: DeliveryRequest, settings: Settings, *, lookup: bool, now: datetime) -> DeliveryPlan:
    """The connection's provider renders the requests (no credentials: placeholders stand in for them)."""
    provider = registry.get(config.provider).build(config, None, settings)
    try:
        return provider.plan_delivery(request, lookup=lookup, now=now)
    finally:
        _close(provider)


def _out(planned: DeliveryPlan) -> list[PlannedRequestOut]:
    return [
        PlannedRequestOut(
            operation=r.operation,
            method=r.method,
            url=r.url,
            when=r.when,
            params=r.params or {},
            headers=r.headers or {},
            body=r.body,
        )
        for r in planned.requests
    ]


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
    if (
        status in DUE_ROUTING_STATUSES
        and routing.lease_owner is not None
        and routing.lease_expires_at is not None
        and routing.lease_expires_at > now
    ):
        status = RoutingStatus.claimed  # leased by a run that has not written to it yet (delivery/claims.py)
    due = routing.next_attempt_at <= now
    max_attempts = settings.delivery_max_attempts

    requests: list[PlannedRequestOut] = []
    placeholders: dict[str, str] = {}
    connection: dict[str, Any] | None = None
    missing: dict[str, list[str]] = {}
    note = ""
    conn_state = ConnectionState.none
    if conn is not None:
        config = connection_config(conn, None)
        missing = config.missing_settings()
        connection = {
            "connection_id": str(conn.id),
            "provider": conn.provider,
            "environment": conn.environment,
            "account_id": conn.account_id,
            "delivery_mode": conn.delivery_mode,
            "enabled": conn.enabled,
            "health": conn.health,
        }
        conn_state = (
            ConnectionState.disabled
            if not conn.enabled
            else ConnectionState.misconfigured
            if missing
            else ConnectionState.ready
        )
    state = RoutingState(
        status=status,
        lookup_required=routing.lookup_required,
        attempts=routing.attempts,
        max_attempts=max_attempts,
        connection=conn_state,
    )
    lookup = state.needs_lookup
    action = next_action(state)
    if conn is not None and not missing:
        try:
            planned = plan(
                config,
                delivery_request(routing, job, referrer.name if referrer else None),
                settings,
                lookup=lookup,
                now=now,
            )
        except NotImplementedError as exc:
            note = f" ({exc}: its requests cannot be shown)"
        else:
            requests, placeholders = _out(planned), dict(planned.placeholders)

    would_send = False
    if action is Action.wait_for_connection:
        decision = (
            "no enabled provider connection: the routing waits in no_integration; enabling a connection for "
            "the company returns it to pending"
        )
    elif action is Action.fail_misconfigured:
        fields = "; ".join(f"{k}: {', '.join(v)}" for k, v in missing.items())
        decision = f"the connection is misconfigured ({fields}): a run would fail this routing without sending"
    elif action is Action.nothing_delivered:
        decision = f"already delivered as {routing.external_id}: nothing would be sent again"
    elif action is Action.held_by_run:
        decision = (
            f"a run ({routing.lease_owner}) holds it until {routing.lease_expires_at}: its outcome decides; "
            "nothing more would be sent by another run"
        )
    elif action is Action.wait_for_retry:
        decision = (
            f"failed ({routing.last_error_code}): nothing is sent until it is retried; after a retry the run "
            + ("looks it up first, then " if lookup else "")
            + "sends the requests shown"
        )
    elif action is Action.wait_for_enable:
        decision = "in no_integration: nothing is sent until the company's connection is enabled again"
    elif action is Action.look_up and next_action(state.after_lookup(False)) is Action.give_up:
        decision = (
            f"looked up first; if not found at the provider it fails as attempts_exhausted "
            f"({routing.attempts}/{max_attempts} attempts used) instead of being sent again"
        )
    else:
        would_send = True
        when = "the next run" if due else f"the first run after {routing.next_attempt_at.isoformat()}"
        decision = (
            f"{when} looks the marker up first and sends only if nothing is found at the provider"
            if action is Action.look_up
            else f"{when} sends it (no earlier request can have reached the provider)"
        )
    decision += note

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
        placeholders=placeholders if requests else {},
    )
