"""Companies, their skills and technicians, and their provider connections."""

from __future__ import annotations

import uuid
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from integration_core import audit, crypto
from integration_core.db.models import (
    Company,
    CompanySkill,
    JobRouting,
    ProviderConnection,
    RoutingStatus,
    Technician,
)
from integration_core.domain import ConnectionHealth
from integration_core.errors import InvalidInput, NotFound
from integration_core.providers import registry
from integration_core.schemas import (
    CompanyCreate,
    CompanyUpdate,
    ConnectionCreate,
    ConnectionOut,
    ConnectionUpdate,
    SkillIn,
    TechnicianCreate,
)


def create_company(session: Session, data: CompanyCreate, *, actor: str = "api") -> Company:
    company = Company(
        name=data.name,
        trade=data.trade,
        service_zip_codes=sorted(set(data.service_zip_codes)),
        timezone=data.timezone,
        active=data.active,
        skills=[CompanySkill(skill=s.skill, level=s.level.value, is_primary=s.primary) for s in data.skills],
    )
    session.add(company)
    session.flush()  # the database issues `partition_key` (migration 0005) and hands it back
    audit.record(
        session,
        actor=actor,
        action="company.created",
        entity_type="company",
        entity_id=company.id,
        details={"partition_key": company.partition_key},
    )
    return company


def company_for_partition_key(session: Session, key: str) -> Company | None:
    """The company a Dagster partition key names: its `partition_key`, or (partitions from before migration 0005)
    its bare id."""
    try:
        legacy = uuid.UUID(key)
    except ValueError:
        return session.scalar(select(Company).where(Company.partition_key == key))
    return session.get(Company, legacy)


def add_technician(
    session: Session, company_id: uuid.UUID, data: TechnicianCreate, *, actor: str = "api"
) -> Technician:
    if session.get(Company, company_id) is None:
        raise NotFound("company", company_id)
    tech = Technician(
        company_id=company_id, name=data.name, phone=data.phone, email=str(data.email) if data.email else None
    )
    session.add(tech)
    session.flush()
    audit.record(session, actor=actor, action="technician.created", entity_type="technician", entity_id=tech.id)
    return tech


def _connection_problems(spec: registry.ProviderSpec, config: Any) -> None:
    """The input rules every provider's connection obeys (`registry.input_problems`), as a 422 naming fields."""
    problems = registry.input_problems(spec, config)
    if problems:
        raise InvalidInput([(("body", name), message) for name, message in problems.items()])


def _store(conn: ProviderConnection, spec: registry.ProviderSpec, config: Any) -> None:
    conn.environment = config.environment
    conn.base_url = config.base_url
    conn.delivery_mode = config.delivery_mode
    conn.rate_limit_per_second = config.rate_limit_per_second
    conn.rate_limit_burst = config.rate_limit_burst
    conn.account_id = config.account_id
    conn.settings = spec.settings_of(config)


def upsert_connection(
    session: Session, company_id: uuid.UUID, data: ConnectionCreate, *, secret_key: str, actor: str = "api"
) -> ProviderConnection:
    """Create or replace the company's connection to `data.provider` (secrets re-encrypted, each on its own)."""
    if session.get(Company, company_id) is None:
        raise NotFound("company", company_id)
    config: Any = data.root  # the provider's connection model
    spec = registry.get(data.provider)
    _connection_problems(spec, config)
    conn = session.scalar(
        select(ProviderConnection).where(
            ProviderConnection.company_id == company_id, ProviderConnection.provider == data.provider
        )
    )
    created = conn is None
    if conn is None:
        conn = ProviderConnection(company_id=company_id, provider=data.provider)
        session.add(conn)
    _store(conn, spec, config)
    secrets = spec.secrets_of(config)
    conn.secrets_encrypted = {name: crypto.encrypt(value, secret_key) for name, value in secrets.items()}
    conn.health = ConnectionHealth.unknown.value
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="connection.created" if created else "connection.updated",
        entity_type="provider_connection",
        entity_id=conn.id,
        details={
            "company_id": str(company_id),
            "provider": data.provider,
            "environment": config.environment,
            "mode": config.delivery_mode,
        },
    )
    set_connection_enabled(session, conn, data.enabled, actor=actor)
    return conn


def set_connection_enabled(session: Session, conn: ProviderConnection, enabled: bool, *, actor: str) -> int:
    """Enable or disable a connection and move the company's waiting routings accordingly.

    Enabling: `no_integration` → `pending` (due now). Disabling: `pending` → `no_integration` (`claimed` ones finish
    their run; a `pending` one a run has leased and not started moves too, and that run's fenced writes then leave
    it alone; nothing is lost). Returns how many routings moved.
    """
    conn.enabled = enabled
    src, dst = (
        (RoutingStatus.no_integration, RoutingStatus.pending)
        if enabled
        else (RoutingStatus.pending, RoutingStatus.no_integration)
    )
    values: dict[str, object] = {"status": dst.value}
    if enabled:
        values["next_attempt_at"] = func.now()
    moved = cast(
        "CursorResult[Any]",
        session.execute(
            update(JobRouting)
            .where(JobRouting.receiving_company_id == conn.company_id, JobRouting.status == src.value)
            .values(**values)
        ),
    ).rowcount
    audit.record(
        session,
        actor=actor,
        action="connection.enabled" if enabled else "connection.disabled",
        entity_type="provider_connection",
        entity_id=conn.id,
        details={"routings_moved": moved},
    )
    return int(moved or 0)


def credentials(conn: ProviderConnection, secret_key: str) -> dict[str, str]:
    """The connection's secrets in plaintext by field name — for the provider only; never log them."""
    from integration_core.delivery.connections import decrypt_secrets

    return decrypt_secrets(conn, secret_key)


def connection_out(conn: ProviderConnection, secret_key: str | None = None) -> ConnectionOut:
    """The connection without any secret: per secret field only whether it is set."""
    try:
        secret_fields = registry.get(conn.provider).secret_fields
    except registry.UnknownProvider:
        secret_fields = tuple(conn.secrets_encrypted)
    return ConnectionOut(
        id=conn.id,
        company_id=conn.company_id,
        provider=conn.provider,
        environment=conn.environment,
        base_url=conn.base_url,
        account_id=conn.account_id,
        delivery_mode=conn.delivery_mode,
        settings=dict(conn.settings),
        secrets_set={name: bool(conn.secrets_encrypted.get(name)) for name in secret_fields},
        rate_limit_per_second=conn.rate_limit_per_second,
        rate_limit_burst=conn.rate_limit_burst,
        enabled=conn.enabled,
        health=conn.health,
        health_checked_at=conn.health_checked_at,
        last_success_at=conn.last_success_at,
        last_failure_at=conn.last_failure_at,
        last_error=conn.last_error,
        created_at=conn.created_at,
        updated_at=conn.updated_at,
    )


# --------------------------------------------------------------------------------------------------------------
# Management (the operator surface: HTTP admin API and `si`). Every change is audit-logged without secrets.
# --------------------------------------------------------------------------------------------------------------


def _company(session: Session, company_id: uuid.UUID) -> Company:
    company = session.get(Company, company_id)
    if company is None:
        raise NotFound("company", company_id)
    return company


def update_company(session: Session, company_id: uuid.UUID, data: CompanyUpdate, *, actor: str) -> Company:
    """Change the given fields. `active=false` takes the company out of matching; routings already made for it
    keep going (disable its connection to hold them)."""
    company = _company(session, company_id)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise InvalidInput.field(("body", "name"), "name cannot be null")
    for name in ("timezone", "active"):
        if name in changes and changes[name] is None:
            raise InvalidInput.field(("body", name), f"{name} cannot be null")
    if "service_zip_codes" in changes:
        changes["service_zip_codes"] = sorted(set(changes["service_zip_codes"] or []))
    for name, value in changes.items():
        setattr(company, name, value)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="company.updated",
        entity_type="company",
        entity_id=company.id,
        details={"fields": sorted(changes)},
    )
    return company


def _set_active(session: Session, entity: Company | Technician, active: bool, *, actor: str) -> None:
    """Enable or disable a company or technician, audited as ``<company|technician>.<enabled|disabled>``."""
    entity_type = "company" if isinstance(entity, Company) else "technician"
    entity.active = active
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"{entity_type}.enabled" if active else f"{entity_type}.disabled",
        entity_type=entity_type,
        entity_id=entity.id,
    )


def set_company_active(session: Session, company_id: uuid.UUID, active: bool, *, actor: str) -> Company:
    company = _company(session, company_id)
    _set_active(session, company, active, actor=actor)
    return company


def replace_skills(session: Session, company_id: uuid.UUID, skills: list[SkillIn], *, actor: str) -> Company:
    company = _company(session, company_id)
    company.skills.clear()
    session.flush()  # the unique (company, skill) constraint: delete before re-adding the same names
    company.skills.extend(CompanySkill(skill=s.skill, level=s.level.value, is_primary=s.primary) for s in skills)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="company.skills_replaced",
        entity_type="company",
        entity_id=company.id,
        details={"skills": [s.skill for s in skills]},
    )
    return company


def set_technician_active(
    session: Session, company_id: uuid.UUID, technician_id: uuid.UUID, active: bool, *, actor: str
) -> Technician:
    """A disabled technician can no longer refer work (intake refuses them); their earlier referrals stay."""
    tech = session.get(Technician, technician_id)
    if tech is None or tech.company_id != company_id:
        raise NotFound("technician", technician_id)
    _set_active(session, tech, active, actor=actor)
    return tech


def company_connection(session: Session, company_id: uuid.UUID) -> ProviderConnection:
    """The company's provider connection (the enabled one first). Raises NotFound."""
    _company(session, company_id)
    conn = session.scalars(
        select(ProviderConnection)
        .where(ProviderConnection.company_id == company_id)
        .order_by(ProviderConnection.enabled.desc(), ProviderConnection.provider)
    ).first()
    if conn is None:
        raise NotFound("provider connection of company", company_id)
    return conn


def update_connection(
    session: Session, company_id: uuid.UUID, data: ConnectionUpdate, *, actor: str
) -> ProviderConnection:
    """Change non-secret settings of the company's connection (common or the provider's own); the result must
    still be a complete connection for its provider and delivery mode (field-level 422 otherwise). Health goes
    back to `unknown` until the next check."""
    from integration_core.schemas import CONNECTION_INPUTS

    conn = company_connection(session, company_id)
    spec = registry.get(conn.provider)
    changes = data.model_dump(exclude_unset=True)
    errors: list[tuple[tuple[str | int, ...], str]] = []
    for name in changes:
        if name in spec.secret_fields:
            errors.append((("body", name), "secrets are replaced only through PUT (the whole connection)"))
        elif name == "provider" and changes[name] != conn.provider:
            errors.append((("body", name), "a connection's provider cannot change; PUT a connection for the other"))
    if errors:
        raise InvalidInput(errors)
    current = {
        "provider": conn.provider,
        "environment": conn.environment,
        "base_url": conn.base_url,
        "delivery_mode": conn.delivery_mode,
        "rate_limit_per_second": conn.rate_limit_per_second,
        "rate_limit_burst": conn.rate_limit_burst,
        **conn.settings,
    }
    # the secrets are not needed to check the settings: stand-ins take their place and are never stored
    stand_ins = {name: "unchanged-secret" for name in spec.secret_fields}
    try:
        config = CONNECTION_INPUTS[conn.provider].model_validate({**current, **changes, **stand_ins})
    except ValidationError as exc:
        raise InvalidInput(
            [(("body", *(str(p) for p in e["loc"])), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        ) from None
    _connection_problems(spec, config)
    _store(conn, spec, config)
    if changes:
        conn.health = ConnectionHealth.unknown.value
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="connection.updated",
        entity_type="provider_connection",
        entity_id=conn.id,
        details={"company_id": str(company_id), "fields": sorted(changes)},
    )
    return conn
