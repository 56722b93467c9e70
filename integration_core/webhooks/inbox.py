"""The inbox (`webhook_events`): store a verified event once, count refused calls, show both to operators."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from integration_core.domain import WebhookEventStatus
from integration_core.webhooks.events import EventInfo

_INSERT = text(
    """
    INSERT INTO webhook_events (provider, connection_id, company_id, dedup_key, event_id, event_type, external_id,
                                occurred_at, payload)
    VALUES (:provider, :connection_id, :company_id, :dedup_key, :event_id, :event_type, :external_id,
            :occurred_at, :payload)
    ON CONFLICT (provider, dedup_key) DO NOTHING
    RETURNING id
    """
).bindparams(bindparam("payload", type_=JSONB))
_REJECT = text(
    """
    INSERT INTO webhook_rejections (provider, connection_key, reason, count) VALUES (:provider, :key, :reason, 1)
    ON CONFLICT (provider, connection_key, reason)
    DO UPDATE SET count = webhook_rejections.count + 1, last_at = now()
    """
)


def dedup_key(connection_id: uuid.UUID | None, event_id: str | None, body: bytes) -> str:
    """The provider's event id within the connection, else the sha256 of the raw body."""
    scope = str(connection_id) if connection_id else "-"
    return f"{scope}:id:{event_id}" if event_id else f"{scope}:sha256:{hashlib.sha256(body).hexdigest()}"


@dataclass(frozen=True)
class Stored:
    event_id: int | None  # the inbox row (None: a duplicate, already stored)
    duplicate: bool


def store(
    engine: Engine,
    *,
    provider: str,
    connection_id: uuid.UUID | None,
    company_id: uuid.UUID | None,
    body: bytes,
    payload: dict[str, Any],
    info: EventInfo,
) -> Stored:
    """One statement in one transaction: the event is stored whole or not at all; a duplicate stores nothing."""
    with engine.begin() as conn:
        new_id = conn.execute(
            _INSERT,
            {
                "provider": provider,
                "connection_id": connection_id,
                "company_id": company_id,
                "dedup_key": dedup_key(connection_id, info.event_id, body),
                "event_id": info.event_id,
                "event_type": info.event_type,
                "external_id": info.external_id,
                "occurred_at": info.occurred_at,
                "payload": payload,
            },
        ).scalar()
    return Stored(event_id=new_id, duplicate=new_id is None)


def record_rejection(engine: Engine, *, provider: str, connection_key: str, reason: str) -> None:
    """Count a refused call (never its body). Best effort: a database that is down loses the count, not more."""
    with engine.begin() as conn:
        conn.execute(_REJECT, {"provider": provider, "key": connection_key[:64], "reason": reason[:32]})


# -- operator views --------------------------------------------------------------------------------------------


def summary(conn: Connection) -> dict[str, Any]:
    """Counts by provider and status, the oldest unapplied event's age, the last error, rejected calls."""
    counts: dict[str, dict[str, int]] = {}
    for row in conn.execute(
        text("SELECT provider, status, count(*) AS n FROM webhook_events GROUP BY 1, 2 ORDER BY 1, 2")
    ).mappings():
        counts.setdefault(str(row["provider"]), {})[str(row["status"])] = int(row["n"])
    oldest = conn.execute(
        text(
            "SELECT extract(epoch FROM now() - min(received_at)) FROM webhook_events "  # noqa: S608
            f"WHERE status = '{WebhookEventStatus.received}'"
        )
    ).scalar()
    last_error = (
        conn.execute(
            text(
                "SELECT id, provider, event_type, status, last_error, received_at FROM webhook_events "
                "WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 1"
            )
        )
        .mappings()
        .first()
    )
    rejected = [
        {
            "provider": r["provider"],
            "connection_id": r["connection_key"] or None,
            "reason": r["reason"],
            "count": int(r["count"]),
            "last_at": r["last_at"].isoformat(),
        }
        for r in conn.execute(
            text("SELECT * FROM webhook_rejections ORDER BY provider, connection_key, reason")
        ).mappings()
    ]
    return {
        "events": counts,
        "unapplied": sum(c.get(WebhookEventStatus.received, 0) for c in counts.values()),
        "oldest_unapplied_age_s": round(float(oldest), 1) if oldest is not None else None,
        "last_error": (
            {**dict(last_error), "received_at": last_error["received_at"].isoformat()} if last_error else None
        ),
        "rejected": rejected,
        "rejected_total": sum(r["count"] for r in rejected),
    }


def list_events(
    conn: Connection,
    *,
    provider: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest events (no payload: it may carry homeowner data)."""
    rows = conn.execute(
        text(
            """
            SELECT id, provider, connection_id, event_id, event_type, external_id, occurred_at, received_at, status,
                   attempts, last_error, applied_at
              FROM webhook_events
             WHERE (CAST(:provider AS text) IS NULL OR provider = :provider)
               AND (CAST(:status AS text) IS NULL OR status = :status)
             ORDER BY id DESC LIMIT :limit
            """
        ),
        {"provider": provider, "status": status, "limit": limit},
    ).mappings()
    out = []
    for r in rows:
        item = dict(r)
        for key in ("occurred_at", "received_at", "applied_at"):
            value = item.get(key)
            item[key] = value.isoformat() if isinstance(value, datetime) else None
        item["connection_id"] = str(item["connection_id"]) if item["connection_id"] else None
        out.append(item)
    return out


def replay(
    conn: Connection, *, ids: list[int] | None = None, status: str | None = None, provider: str | None = None
) -> int:
    """Put events back in the queue (status `received`, attempts 0): by id, or every event in a status."""
    if not ids and status is None:
        raise ValueError("name event ids or a status to replay")
    result = conn.execute(
        text(
            f"""
            UPDATE webhook_events SET status = '{WebhookEventStatus.received}', attempts = 0, last_error = NULL,
                   applied_at = NULL
             WHERE (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[])))
               AND (CAST(:status AS text) IS NULL OR status = :status)
               AND (CAST(:provider AS text) IS NULL OR provider = :provider)
            """  # noqa: S608 - state names from the domain enums only
        ),
        {"ids": ids or None, "status": status, "provider": provider},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)
