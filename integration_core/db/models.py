"""ORM models (SQLAlchemy 2 typed style). The alembic history in `migrations/` produces exactly this schema;
`tests/db/test_migrations.py` proves there is no drift.

Timestamps come from the database clock (`now()` defaults and an `updated_at` trigger), never from Python.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    FetchedValue,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from integration_core.domain import (
    AttemptOutcome,
    ConnectionHealth,
    DeliveryMode,
    JobStatus,
    ProviderEnvironment,
    ProviderName,
    RoutingStatus,
    SkillLevel,
)

__all__ = [
    "AttemptOutcome",
    "AuditLog",
    "Base",
    "Company",
    "CompanySkill",
    "ConnectionHealth",
    "DeliveryMode",
    "Job",
    "JobRouting",
    "JobStatus",
    "ProviderConnection",
    "ProviderEnvironment",
    "ProviderRateLimit",
    "RoutingStatus",
    "SkillLevel",
    "SyncAttempt",
    "Technician",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _check_in(column: str, values: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _uuid_pk() -> Mapped[uuid.UUID]:
    # time-ordered (UUID version 7, migration 0008): rows created together share index pages
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("time_ordered_uuid()"))


class Company(Base):
    __tablename__ = "companies"
    __table_args__ = (
        CheckConstraint("length(trim(name)) > 0", name="name_not_blank"),
        Index("ix_companies_service_zip_codes", "service_zip_codes", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    # Dagster partition key (`bright-spark-electric-3f2a`): issued by the database at insert, never changed
    # (migration 0005; docs/reports.md)
    partition_key: Mapped[str] = mapped_column(String(100), nullable=False, unique=True, server_default=FetchedValue())
    trade: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    service_zip_codes: Mapped[list[str]] = mapped_column(
        ARRAY(String(10)), nullable=False, server_default=text("'{}'::varchar[]")
    )
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, server_default="America/Los_Angeles")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    skills: Mapped[list[CompanySkill]] = relationship(
        back_populates="company", cascade="all, delete-orphan", order_by="CompanySkill.skill"
    )
    technicians: Mapped[list[Technician]] = relationship(back_populates="company")
    connections: Mapped[list[ProviderConnection]] = relationship(back_populates="company")


class CompanySkill(Base):
    __tablename__ = "company_skills"
    __table_args__ = (
        UniqueConstraint("company_id", "skill"),
        CheckConstraint(_check_in("level", SkillLevel), name="level_known"),
        CheckConstraint("length(trim(skill)) > 0", name="skill_not_blank"),
        # stored normalised (schemas.SkillName; migration 0006): one row per skill however it was spelled
        CheckConstraint("skill !~ '[A-Z[:space:]-]'", name="skill_normalised"),
        Index("ix_company_skills_skill", "skill"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"), nullable=False)
    skill: Mapped[str] = mapped_column(String(100), nullable=False)
    level: Mapped[str] = mapped_column(String(16), nullable=False, server_default=SkillLevel.intermediate.value)
    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[datetime] = _created_at()

    company: Mapped[Company] = relationship(back_populates="skills")


class Technician(Base):
    __tablename__ = "technicians"
    __table_args__ = (
        CheckConstraint("length(trim(name)) > 0", name="name_not_blank"),
        Index("ix_technicians_company_id", "company_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    company: Mapped[Company] = relationship(back_populates="technicians")


class ProviderConnection(Base):
    """A company's connection to its field-service system (migration 0003: provider-neutral).

    `provider` names the system (`providers/registry.py`); the provider's own non-secret settings are the JSON
    object `settings` (ServiceTitan: tenant_id, booking_provider_id, ...; Housecall Pro: account_id,
    lead_source, ...) and its secrets the JSON object `secrets_encrypted`, one Fernet ciphertext (SECRET_KEY) per
    secret field. `account_id` is the provider account the connection acts for (ServiceTitan tenant id): the
    shared rate budget's key."""

    __tablename__ = "provider_connections"
    __table_args__ = (
        UniqueConstraint("company_id", "provider"),
        CheckConstraint(_check_in("provider", ProviderName), name="provider_known"),
        CheckConstraint(_check_in("environment", ProviderEnvironment), name="environment_known"),
        CheckConstraint(_check_in("delivery_mode", DeliveryMode), name="delivery_mode_known"),
        CheckConstraint(_check_in("health", ConnectionHealth), name="health_known"),
        CheckConstraint("rate_limit_per_second > 0", name="rate_positive"),
        CheckConstraint("rate_limit_burst >= 1", name="burst_positive"),
        CheckConstraint("jsonb_typeof(settings) = 'object'", name="settings_object"),
        CheckConstraint("jsonb_typeof(secrets_encrypted) = 'object'", name="secrets_object"),
        CheckConstraint("length(trim(account_id)) > 0", name="account_not_blank"),
        CheckConstraint(
            "provider <> 'servicetitan' OR delivery_mode <> 'booking' OR settings ? 'booking_provider_id'",
            name="booking_needs_provider",
        ),
        CheckConstraint(
            "provider <> 'servicetitan' OR delivery_mode <> 'job' "
            "OR settings ?& array['business_unit_id', 'job_type_id', 'campaign_id']",
            name="job_needs_ids",
        ),
        Index("ix_provider_connections_account", "provider", "account_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id"), nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False, server_default="servicetitan")
    environment: Mapped[str] = mapped_column(String(16), nullable=False, server_default="sandbox")
    base_url: Mapped[str | None] = mapped_column(String(500))  # the sandbox's URL (loopback), else the provider's
    account_id: Mapped[str] = mapped_column(String(64), nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    secrets_encrypted: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    delivery_mode: Mapped[str] = mapped_column(String(16), nullable=False, server_default="booking")
    rate_limit_per_second: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("60"))
    rate_limit_burst: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("10"))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    health: Mapped[str] = mapped_column(String(16), nullable=False, server_default="unknown")
    health_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    updates_cursor: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    company: Mapped[Company] = relationship(back_populates="connections")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("created_by_company_id", "idempotency_key"),
        CheckConstraint("length(trim(summary)) > 0", name="summary_not_blank"),
        CheckConstraint("length(trim(homeowner_name)) > 0", name="homeowner_name_not_blank"),
        CheckConstraint(_check_in("status", JobStatus), name="status_known"),
        CheckConstraint("jsonb_typeof(required_skills) = 'array'", name="required_skills_array"),
        CheckConstraint("jsonb_typeof(skill_levels) = 'object'", name="skill_levels_object"),
        CheckConstraint("homeowner_phone IS NOT NULL OR homeowner_email IS NOT NULL", name="homeowner_contact"),
        Index("ix_jobs_created_by_company_id_created_at", "created_by_company_id", "created_at"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    summary: Mapped[str] = mapped_column(String(2000), nullable=False)
    street: Mapped[str] = mapped_column(String(255), nullable=False)
    unit: Mapped[str | None] = mapped_column(String(64))
    city: Mapped[str] = mapped_column(String(100), nullable=False)
    state: Mapped[str] = mapped_column(String(2), nullable=False)
    zip_code: Mapped[str] = mapped_column(String(10), nullable=False)
    country: Mapped[str] = mapped_column(String(3), nullable=False, server_default="USA")
    homeowner_name: Mapped[str] = mapped_column(String(255), nullable=False)
    homeowner_phone: Mapped[str | None] = mapped_column(String(32))
    homeowner_email: Mapped[str | None] = mapped_column(String(320))
    created_by_company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id"), nullable=False)
    created_by_technician_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("technicians.id"), nullable=False)
    category: Mapped[str | None] = mapped_column(String(100))
    required_skills: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    skill_levels: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default=JobStatus.routed.value)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # sha256 of the normalised request body: a reused key with a different body is refused (409)
    idempotency_fingerprint: Mapped[str | None] = mapped_column(String(64))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    routings: Mapped[list[JobRouting]] = relationship(back_populates="job", order_by="JobRouting.sequence")


job_routing_sequence = Sequence("job_routings_sequence_seq", metadata=Base.metadata)

FINAL_EXTERNAL_STATUSES = ("completed", "canceled", "dismissed")


class JobRouting(Base):
    """One receiving company's copy of a job, and its delivery state machine (docs/architecture.md)."""

    __tablename__ = "job_routings"
    __table_args__ = (
        UniqueConstraint("job_id", "receiving_company_id"),
        UniqueConstraint("sequence"),
        CheckConstraint(_check_in("status", RoutingStatus), name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint("lease_version >= 0", name="lease_version_non_negative"),
        CheckConstraint("status <> 'synced' OR external_id IS NOT NULL", name="synced_has_external_id"),
        CheckConstraint(
            "status <> 'claimed' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name="claimed_has_lease",
        ),
        CheckConstraint("revenue IS NULL OR revenue >= 0", name="revenue_non_negative"),
        # one company's routings in one status: the reconcile claim (needs_reconcile), status pulls, retries, listings
        Index("ix_job_routings_claim", "receiving_company_id", "status", "next_attempt_at"),
        # the hot path (migration 0002): claim the due routings of one company in claim order, stopping after the
        # batch; the sensor's per-company probe for the oldest due routing and its capped count. The predicate is
        # the claim's literal status set, so the planner can match it.
        Index(
            "ix_job_routings_due",
            "receiving_company_id",
            "next_attempt_at",
            "sequence",
            postgresql_where=text("status IN ('pending', 'needs_reconcile')"),
        ),
        # the status pull: synced routings whose external status is not final yet
        Index(
            "ix_job_routings_open_synced",
            "receiving_company_id",
            "synced_at",
            postgresql_where=text(
                "status = 'synced' AND (external_status IS NULL OR external_status NOT IN "
                "('completed', 'canceled', 'dismissed'))"
            ),
        ),
        # the routings runs have started (migration 0010): lease expiry and the owners of leases read the lease
        # from these rows. No index names a lease column (lease_owner, lease_expires_at, lease_version), so that a
        # claim, which writes only those, is a HOT update (docs/architecture.md, "a claim leases, the first write marks
        # `claimed`")
        Index("ix_job_routings_claimed", "receiving_company_id", postgresql_where=text("status = 'claimed'")),
        # Partial (migration 0007): an update that changes `status` is never HOT, so each new row version costs an
        # entry in every index whose predicate it satisfies. No query reads a claimed row through these: the update
        # matcher names an external id (only synced routings have one), and queries on claimed routings go through
        # ix_job_routings_claimed.
        Index("ix_job_routings_external_id", "external_id", postgresql_where=text("external_id IS NOT NULL")),
        # a status's routings by last change: failure rates, dead letters, the reconcile sweep
        Index("ix_job_routings_status_updated", "status", "updated_at", postgresql_where=text("status <> 'claimed'")),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id"), nullable=False)
    receiving_company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id"), nullable=False)
    match_score: Mapped[Decimal] = mapped_column(Numeric(8, 3), nullable=False, server_default=text("0"))
    match_reasons: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default=RoutingStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # an earlier request may have reached the provider: look the marker up before sending again
    lookup_required: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    delivery_mode: Mapped[str | None] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(64))
    external_refs: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    external_status: Mapped[str | None] = mapped_column(String(32))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revenue: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sequence: Mapped[int] = mapped_column(
        BigInteger, job_routing_sequence, nullable=False, server_default=job_routing_sequence.next_value()
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    job: Mapped[Job] = relationship(back_populates="routings")
    receiving_company: Mapped[Company] = relationship()
    attempts_log: Mapped[list[SyncAttempt]] = relationship(
        back_populates="routing", order_by="SyncAttempt.id", viewonly=True
    )


class RoutingClaim(Base):
    """One claim's receipt (migration 0010): which routings `owner` (a run id) leased. A claim writes only the lease
    columns of the routings, which no index names (so that its update is HOT); a routing leased and not yet written is
    found by its owner through here: the run-end release and the sensor's check for runs that ended holding leases.
    Deleted when the owner's leases are released; ids of routings the owner has since written back are ignored
    (readers check `lease_owner`)."""

    __tablename__ = "routing_claims"
    __table_args__ = (Index("ix_routing_claims_owner", "owner"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), nullable=False)
    company_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    routing_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), nullable=False)
    claimed_at: Mapped[datetime] = _created_at()


class SyncAttempt(Base):
    __tablename__ = "sync_attempts"
    __table_args__ = (
        CheckConstraint(_check_in("outcome", AttemptOutcome), name="outcome_known"),
        CheckConstraint("finished_at IS NULL OR finished_at >= started_at", name="finished_after_start"),
        Index("ix_sync_attempts_routing_id", "routing_id", "id"),
        Index("ix_sync_attempts_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    routing_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job_routings.id"), nullable=False)
    run_id: Mapped[str | None] = mapped_column(String(128))
    attempt_no: Mapped[int] = mapped_column(Integer, nullable=False)
    operation: Mapped[str] = mapped_column(String(16), nullable=False, server_default="deliver")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(16), nullable=False, server_default=AttemptOutcome.in_flight.value)
    http_status: Mapped[int | None] = mapped_column(Integer)
    provider_trace_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)

    routing: Mapped[JobRouting] = relationship(back_populates="attempts_log")


class ProviderRateLimit(Base):
    """Per (provider, account) token-bucket state that every process and the admin API see (the account is the
    connection's `account_id`: ServiceTitan's tenant id, Housecall Pro's account)."""

    __tablename__ = "provider_rate_limits"
    __table_args__ = (
        CheckConstraint("rate > 0", name="rate_positive"),
        CheckConstraint("burst >= 1", name="burst_positive"),
        CheckConstraint("current_rate > 0", name="current_rate_positive"),
    )

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rate: Mapped[float] = mapped_column(Float, nullable=False)
    burst: Mapped[int] = mapped_column(Integer, nullable=False)
    current_rate: Mapped[float] = mapped_column(Float, nullable=False)
    # GCRA ("virtual scheduling"): the earliest time the next request may be scheduled at full rate
    next_slot_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    backoff_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    requests_total: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    throttled_total: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    last_throttled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _updated_at()


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_entity", "entity_type", "entity_id"),
        Index("ix_audit_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


# --- provider-neutral connections (issue 11) ---------------------------------------------------------------


# --- webhook inbox (issue 12) ------------------------------------------------------------------------------


WEBHOOK_EVENT_STATUSES = ("received", "applied", "unmatched", "error")
WEBHOOK_ENCODINGS = ("hex", "base64")


class WebhookEndpoint(Base):
    """A connection's webhook settings (docs/webhooks.md). The signing secret is Fernet-encrypted and write-only."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint("signature_encoding IN ('hex', 'base64')", name="encoding_known"),
        CheckConstraint("length(trim(signature_header)) > 0", name="header_not_blank"),
        CheckConstraint("timestamp_tolerance_seconds > 0", name="tolerance_positive"),
    )

    connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    signature_header: Mapped[str] = mapped_column(String(64), nullable=False)
    signature_encoding: Mapped[str] = mapped_column(String(8), nullable=False, server_default="hex")
    timestamp_header: Mapped[str | None] = mapped_column(String(64))
    timestamp_tolerance_seconds: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("300"))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class WebhookEvent(Base):
    """The inbox: a verified event, stored before it is acknowledged, applied later (integration_core.webhooks)."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "dedup_key"),
        CheckConstraint("status IN ('received', 'applied', 'unmatched', 'error')", name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        # the apply loop and the age check: unapplied events, oldest first
        Index("ix_webhook_events_unapplied", "received_at", "id", postgresql_where=text("status = 'received'")),
        Index("ix_webhook_events_provider_status", "provider", "status"),
        Index("ix_webhook_events_external_id", "external_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    connection_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("provider_connections.id", ondelete="SET NULL"))
    company_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # the provider's event id, else sha256 of the raw body (prefixed with the connection)
    dedup_key: Mapped[str] = mapped_column(String(200), nullable=False)
    event_id: Mapped[str | None] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    external_id: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="received")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# a webhook event may name only the provider's job (an invoice knows its job): delivered routings by that job id
# (migration 0004; integration_core.delivery.updates.apply_update)
Index(
    "ix_job_routings_job_ref",
    JobRouting.external_refs["job_id"].astext,
    postgresql_where=text("status = 'synced'"),
)


class WebhookRejection(Base):
    """Calls refused before anything was stored (bad or missing signature, unknown connection...): counted, no body."""

    __tablename__ = "webhook_rejections"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    # the connection id named by the call ('' when none or not a known connection)
    connection_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


# --- reports (issue 13) ------------------------------------------------------------------------------------


# the delivery report reads one day's routings (migration 0005)
Index("ix_job_routings_created_at", JobRouting.created_at)


class CompanyPartitionKey(Base):
    """Every partition key ever issued (no foreign key: a deleted company's key is never issued again)."""

    __tablename__ = "company_partition_keys"
    __table_args__ = (Index("ix_company_partition_keys_company_id", "company_id"),)

    partition_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    company_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class ReportDeliveryDaily(Base):
    """`delivery_report`: per reporting day (REPORTING_TIMEZONE), receiving company and provider (docs/reports.md)."""

    __tablename__ = "report_delivery_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    receiving_company_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    partition_key: Mapped[str] = mapped_column(String(100), nullable=False)
    company_name: Mapped[str] = mapped_column(String(255), nullable=False)
    routed: Mapped[int] = mapped_column(Integer, nullable=False)
    synced: Mapped[int] = mapped_column(Integer, nullable=False)
    failed: Mapped[int] = mapped_column(Integer, nullable=False)
    still_open: Mapped[int] = mapped_column(Integer, nullable=False)
    failure_rate: Mapped[float | None] = mapped_column(Float)
    routed_to_synced_p50_s: Mapped[float | None] = mapped_column(Float)
    routed_to_synced_p95_s: Mapped[float | None] = mapped_column(Float)
    routed_to_synced_max_s: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    attempts_per_delivery: Mapped[float | None] = mapped_column(Float)
    rate_limited_429: Mapped[int] = mapped_column(Integer, nullable=False)
    top_error_codes: Mapped[str] = mapped_column(String(500), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    computed_at: Mapped[datetime] = _created_at()


class ReportReferralOutcomesDaily(Base):
    """`referral_outcomes`: per reporting day, referring company and technician (docs/reports.md)."""

    __tablename__ = "report_referral_outcomes_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    referring_company_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    technician_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    partition_key: Mapped[str] = mapped_column(String(100), nullable=False)
    company_name: Mapped[str] = mapped_column(String(255), nullable=False)
    technician_name: Mapped[str] = mapped_column(String(255), nullable=False)
    referred: Mapped[int] = mapped_column(Integer, nullable=False)
    delivered: Mapped[int] = mapped_column(Integer, nullable=False)
    accepted: Mapped[int] = mapped_column(Integer, nullable=False)
    completed: Mapped[int] = mapped_column(Integer, nullable=False)
    canceled_dismissed: Mapped[int] = mapped_column(Integer, nullable=False)
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    conversion_rate: Mapped[float | None] = mapped_column(Float)
    median_days_to_completion: Mapped[float | None] = mapped_column(Float)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    computed_at: Mapped[datetime] = _created_at()


TABLES_WITH_UPDATED_AT = tuple(t.name for t in Base.metadata.sorted_tables if "updated_at" in t.c)
