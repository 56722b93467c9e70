"""Append-only audit log of operator and system actions that change routings or configuration."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from integration_core.db.models import AuditLog


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: object | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit row to the caller's transaction. `details` must never carry secrets or homeowner data."""
    session.add(
        AuditLog(
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_id=None if entity_id is None else str(entity_id),
            details=details or {},
        )
    )
