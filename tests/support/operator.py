"""Small builders for operator-surface tests (plain SQL and the core's own functions): receivers with a
connection to an unreachable sandbox, routings put into a state, the audit log."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, text

from integration_core.db.engine import session_scope
from integration_core.referrals.directory import create_company, upsert_connection
from integration_core.schemas import CompanyCreate, ConnectionCreate
from tests.support.config import DEAD_URL, TEST_SECRET_KEY

SECRET = "cs1.super-secret-value-1234"
APP_KEY = "ak1.app-key-value-5678"
CLIENT_ID = "cid.client-id-value-9012"
SECRETS = (SECRET, APP_KEY, CLIENT_ID, "super-secret", "app-key-value", "client-id-value")


def receiver(
    db: Engine,
    name: str,
    *,
    tenant_id: str | None = None,
    base_url: str = DEAD_URL,
    mode: str = "booking",
    enabled: bool = True,
) -> uuid.UUID:
    """A receiving company, connected (to an unreachable sandbox URL by default) when `tenant_id` is given."""
    with session_scope(db) as session:
        company = create_company(
            session,
            CompanyCreate.model_validate(
                {"name": name, "service_zip_codes": ["90210"], "skills": [{"skill": "plumbing", "level": "expert"}]}
            ),
            actor="test",
        )
        if tenant_id:
            upsert_connection(
                session,
                company.id,
                connection_body(tenant_id, base_url, mode, enabled),
                secret_key=TEST_SECRET_KEY,
                actor="test",
            )
        return company.id


def connection_body(
    tenant_id: str, base_url: str = DEAD_URL, mode: str = "booking", enabled: bool = True
) -> ConnectionCreate:
    return ConnectionCreate.model_validate(connection_json(tenant_id, base_url, mode, enabled))


def connection_json(
    tenant_id: str, base_url: str = DEAD_URL, mode: str = "booking", enabled: bool = True
) -> dict[str, Any]:
    return {
        "environment": "sandbox",
        "base_url": base_url,
        "tenant_id": tenant_id,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "app_key": APP_KEY,
        "delivery_mode": mode,
        "booking_provider_id": 101,
        "business_unit_id": 11,
        "job_type_id": 21,
        "campaign_id": 31,
        "external_data_guid": "5a4c3e1d-7d2b-4e0f-9a51-7e2f0c1d9b10",
        "enabled": enabled,
    }


def set_status(db: Engine, ids: list[uuid.UUID], status: str, *, error_code: str | None = None) -> None:
    """Put routings into a state as the engine would leave them (constraints respected)."""
    extra = {
        "synced": "external_id = 'B-' || sequence, synced_at = now()",
        "claimed": "lease_owner = 'run-x', lease_expires_at = now() + interval '5 minutes'",
        "failed": "last_error_code = :code, last_error_message = 'the provider refused it'",
        "needs_reconcile": "lookup_required = true",
    }.get(status)
    sets = f"status = :status{', ' + extra if extra else ''}"
    with db.begin() as conn:
        conn.execute(
            text(f"UPDATE job_routings SET {sets} WHERE id = ANY(:ids)"),
            {"status": status, "ids": ids, "code": error_code or "validation_error"},
        )


def routing_status(db: Engine, routing_id: uuid.UUID) -> str:
    with db.connect() as conn:
        return str(conn.execute(text("SELECT status FROM job_routings WHERE id = :id"), {"id": routing_id}).scalar())


def audit_rows(db: Engine) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(text("SELECT * FROM audit_log ORDER BY id")).mappings()]
