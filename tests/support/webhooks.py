"""Webhook test helpers: a receiver with webhook settings, synced routings, signed posts, the inbox."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from integration_core.api.app import create_app
from integration_core.db.engine import session_scope
from integration_core.local.http_server import serve_in_thread
from integration_core.settings import Settings
from integration_core.webhooks import endpoints
from integration_core.webhooks.apply import ApplySummary, apply_inbox
from integration_core.webhooks.signing import Encoding, sign
from tests.support.config import TEST_SECRET_KEY, with_settings
from tests.support.sandbox import SandboxHandle
from tests.support.world import World, add_receiver

ST_SECRET = "st-webhook-secret-0123456789abcdefghij"
HCP_SECRET = "hcp-webhook-secret-0123456789abcdefgh"
GENERIC_SECRET = "generic-webhook-secret-0123456789"


def webhook_settings(settings: Settings) -> Settings:
    """The generic endpoint's secret set; events applied by the test (as the sensor would), not by the API after
    the answer: each step is observable."""
    return with_settings(settings, webhook_generic_secret=SecretStr(GENERIC_SECRET), webhook_apply_in_api=False)


@contextmanager
def webhook_api(db: Engine, settings: Settings) -> Iterator[httpx.Client]:
    """The API over loopback, with no token in the client: webhooks authenticate by signature only."""
    with serve_in_thread(create_app(settings, engine=db)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def st_webhook_receiver(db: Engine, sandbox: SandboxHandle) -> tuple[uuid.UUID, uuid.UUID]:
    """(company, connection) with ServiceTitan webhook settings (defaults: X-ServiceTitan-Signature, base64)."""
    company, _tenant = add_receiver(db, sandbox)
    conn = connection_id(db, company)
    configure(db, conn, ST_SECRET)
    return company, conn


def connection_id(db: Engine, company_id: uuid.UUID) -> uuid.UUID:
    with db.connect() as conn:
        found: uuid.UUID = conn.execute(
            text("SELECT id FROM provider_connections WHERE company_id = :c"), {"c": company_id}
        ).scalar_one()
        return found


def configure(db: Engine, connection: uuid.UUID, secret: str = ST_SECRET, **options: Any) -> None:
    with session_scope(db) as session:
        endpoints.configure(session, connection, secret=secret, secret_key=TEST_SECRET_KEY, actor="test", **options)


def synced_routing(
    db: Engine,
    world: World,
    company_id: uuid.UUID,
    *,
    external_id: str,
    kind: str = "booking",
    refs: dict[str, Any] | None = None,
) -> uuid.UUID:
    """A routing delivered to `company_id` as `kind` `external_id` (written as the engine writes it)."""
    with db.begin() as conn:
        job_id: uuid.UUID = conn.execute(
            text(
                """
                INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone,
                                  created_by_company_id, created_by_technician_id)
                VALUES ('Leaking pipe', '1 Elm St', 'Beverly Hills', 'CA', '90210', 'Homeowner', '3105550100',
                        :c, :t)
                RETURNING id
                """
            ),
            {"c": world.referrer, "t": world.technician},
        ).scalar_one()
        all_refs = {"kind": kind, **(refs or {})}
        routing: uuid.UUID = conn.execute(
            text(
                """
                INSERT INTO job_routings (job_id, receiving_company_id, status, external_id, external_refs,
                                          delivery_mode, synced_at)
                VALUES (:job, :rc, 'synced', :ext, CAST(:refs AS jsonb), :mode, now())
                RETURNING id
                """
            ),
            {"job": job_id, "rc": company_id, "ext": external_id, "refs": json.dumps(all_refs), "mode": kind},
        ).scalar_one()
        return routing


def routing(db: Engine, routing_id: uuid.UUID) -> dict[str, Any]:
    with db.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "SELECT r.external_status, r.completed_at, r.revenue, r.external_refs, r.updated_at, "
                    "j.status AS job_status FROM job_routings r JOIN jobs j ON j.id = r.job_id WHERE r.id = :id"
                ),
                {"id": routing_id},
            )
            .mappings()
            .one()
        )


def inbox(db: Engine) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(text("SELECT * FROM webhook_events ORDER BY id")).mappings()]


def rejections(db: Engine) -> dict[str, int]:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT reason, sum(count) AS n FROM webhook_rejections GROUP BY reason")).mappings()
        return {str(r["reason"]): int(r["n"]) for r in rows}


def apply(database_url: str, settings: Settings) -> ApplySummary:
    async def main() -> ApplySummary:
        engine = create_async_engine(database_url)
        try:
            return await apply_inbox(engine, settings)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def st_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def st_event(entity: str, change: str, data: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "eventId": event_id or str(uuid.uuid4()),
        "eventType": f"{entity}.{change}",
        "tenantId": 7001,
        "occurredOn": data.get("modifiedOn") or st_time(datetime.now(UTC)),
        "data": data,
    }


def body_of(payload: dict[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def post_signed(
    client: httpx.Client,
    path: str,
    payload: dict[str, Any] | bytes,
    secret: str | None,
    *,
    header: str = "X-ServiceTitan-Signature",
    encoding: Encoding = "base64",
    timestamp: str | None = None,
    timestamp_header: str | None = None,
) -> httpx.Response:
    body = body_of(payload)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[header] = sign(secret, body, encoding=encoding, timestamp=timestamp)
    if timestamp is not None and timestamp_header:
        headers[timestamp_header] = timestamp
    return client.post(path, content=body, headers=headers)
