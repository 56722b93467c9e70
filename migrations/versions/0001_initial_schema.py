"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 10:44:08.699217
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


UPDATED_AT_TABLES = (
    "companies",
    "technicians",
    "provider_connections",
    "jobs",
    "job_routings",
    "provider_rate_limits",
)


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("job_routings_sequence_seq")))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_index("ix_audit_log_entity", "audit_log", ["entity_type", "entity_id"], unique=False)
    op.create_table(
        "companies",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("trade", sa.String(length=100), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "service_zip_codes",
            postgresql.ARRAY(sa.String(length=10)),
            server_default=sa.text("'{}'::varchar[]"),
            nullable=False,
        ),
        sa.Column("timezone", sa.String(length=64), server_default="America/Los_Angeles", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("length(trim(name)) > 0", name=op.f("ck_companies_name_not_blank")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_companies")),
    )
    op.create_index(
        "ix_companies_service_zip_codes",
        "companies",
        ["service_zip_codes"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_table(
        "provider_rate_limits",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.Column("current_rate", sa.Float(), nullable=False),
        sa.Column("next_slot_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("backoff_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requests_total", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("throttled_total", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_throttled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("burst >= 1", name=op.f("ck_provider_rate_limits_burst_positive")),
        sa.CheckConstraint("current_rate > 0", name=op.f("ck_provider_rate_limits_current_rate_positive")),
        sa.CheckConstraint("rate > 0", name=op.f("ck_provider_rate_limits_rate_positive")),
        sa.PrimaryKeyConstraint("provider", "tenant_id", name=op.f("pk_provider_rate_limits")),
    )
    op.create_table(
        "company_skills",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("company_id", sa.UUID(), nullable=False),
        sa.Column("skill", sa.String(length=100), nullable=False),
        sa.Column("level", sa.String(length=16), server_default="intermediate", nullable=False),
        sa.Column("is_primary", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("level IN ('basic', 'intermediate', 'expert')", name=op.f("ck_company_skills_level_known")),
        sa.CheckConstraint("length(trim(skill)) > 0", name=op.f("ck_company_skills_skill_not_blank")),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_company_skills_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_company_skills")),
        sa.UniqueConstraint("company_id", "skill", name=op.f("uq_company_skills_company_id_skill")),
    )
    op.create_index("ix_company_skills_skill", "company_skills", ["skill"], unique=False)
    op.create_table(
        "provider_connections",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("company_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.String(length=32), server_default="servicetitan", nullable=False),
        sa.Column("environment", sa.String(length=16), server_default="sandbox", nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("client_id_encrypted", sa.Text(), nullable=False),
        sa.Column("client_secret_encrypted", sa.Text(), nullable=False),
        sa.Column("app_key_encrypted", sa.Text(), nullable=False),
        sa.Column("delivery_mode", sa.String(length=16), server_default="booking", nullable=False),
        sa.Column("booking_provider_id", sa.BigInteger(), nullable=True),
        sa.Column("business_unit_id", sa.BigInteger(), nullable=True),
        sa.Column("job_type_id", sa.BigInteger(), nullable=True),
        sa.Column("campaign_id", sa.BigInteger(), nullable=True),
        sa.Column("priority", sa.String(length=16), server_default="Normal", nullable=False),
        sa.Column("external_data_guid", sa.String(length=64), nullable=True),
        sa.Column("rate_limit_per_second", sa.Float(), server_default=sa.text("60"), nullable=False),
        sa.Column("rate_limit_burst", sa.Integer(), server_default=sa.text("10"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("health", sa.String(length=16), server_default="unknown", nullable=False),
        sa.Column("health_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updates_cursor", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "delivery_mode <> 'booking' OR booking_provider_id IS NOT NULL",
            name=op.f("ck_provider_connections_booking_needs_provider"),
        ),
        sa.CheckConstraint(
            "delivery_mode <> 'job' OR (business_unit_id IS NOT NULL AND job_type_id IS NOT NULL AND campaign_id IS NOT NULL)",
            name=op.f("ck_provider_connections_job_needs_ids"),
        ),
        sa.CheckConstraint(
            "delivery_mode IN ('booking', 'job')", name=op.f("ck_provider_connections_delivery_mode_known")
        ),
        sa.CheckConstraint(
            "environment IN ('production', 'integration', 'sandbox')",
            name=op.f("ck_provider_connections_environment_known"),
        ),
        sa.CheckConstraint(
            "health IN ('unknown', 'healthy', 'unhealthy')", name=op.f("ck_provider_connections_health_known")
        ),
        sa.CheckConstraint(
            "priority IN ('Low', 'Normal', 'High', 'Urgent')",
            name=op.f("ck_provider_connections_priority_known"),
        ),
        sa.CheckConstraint("provider IN ('servicetitan')", name=op.f("ck_provider_connections_provider_known")),
        sa.CheckConstraint("rate_limit_burst >= 1", name=op.f("ck_provider_connections_burst_positive")),
        sa.CheckConstraint("rate_limit_per_second > 0", name=op.f("ck_provider_connections_rate_positive")),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_provider_connections_company_id_companies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_connections")),
        sa.UniqueConstraint("company_id", "provider", name=op.f("uq_provider_connections_company_id_provider")),
    )
    op.create_index("ix_provider_connections_tenant", "provider_connections", ["provider", "tenant_id"], unique=False)
    op.create_table(
        "technicians",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("company_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("length(trim(name)) > 0", name=op.f("ck_technicians_name_not_blank")),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name=op.f("fk_technicians_company_id_companies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_technicians")),
    )
    op.create_index("ix_technicians_company_id", "technicians", ["company_id"], unique=False)
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("summary", sa.String(length=2000), nullable=False),
        sa.Column("street", sa.String(length=255), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=2), nullable=False),
        sa.Column("zip_code", sa.String(length=10), nullable=False),
        sa.Column("country", sa.String(length=3), server_default="USA", nullable=False),
        sa.Column("homeowner_name", sa.String(length=255), nullable=False),
        sa.Column("homeowner_phone", sa.String(length=32), nullable=True),
        sa.Column("homeowner_email", sa.String(length=320), nullable=True),
        sa.Column("created_by_company_id", sa.UUID(), nullable=False),
        sa.Column("created_by_technician_id", sa.UUID(), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column(
            "required_skills",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "skill_levels",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), server_default="routed", nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("idempotency_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("jsonb_typeof(required_skills) = 'array'", name=op.f("ck_jobs_required_skills_array")),
        sa.CheckConstraint("jsonb_typeof(skill_levels) = 'object'", name=op.f("ck_jobs_skill_levels_object")),
        sa.CheckConstraint(
            "status IN ('routed', 'unmatched', 'completed', 'canceled')", name=op.f("ck_jobs_status_known")
        ),
        sa.CheckConstraint(
            "homeowner_phone IS NOT NULL OR homeowner_email IS NOT NULL",
            name=op.f("ck_jobs_homeowner_contact"),
        ),
        sa.CheckConstraint("length(trim(homeowner_name)) > 0", name=op.f("ck_jobs_homeowner_name_not_blank")),
        sa.CheckConstraint("length(trim(summary)) > 0", name=op.f("ck_jobs_summary_not_blank")),
        sa.ForeignKeyConstraint(
            ["created_by_company_id"], ["companies.id"], name=op.f("fk_jobs_created_by_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_technician_id"],
            ["technicians.id"],
            name=op.f("fk_jobs_created_by_technician_id_technicians"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint(
            "created_by_company_id",
            "idempotency_key",
            name=op.f("uq_jobs_created_by_company_id_idempotency_key"),
        ),
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"], unique=False)
    op.create_index(
        "ix_jobs_created_by_company_id_created_at",
        "jobs",
        ["created_by_company_id", "created_at"],
        unique=False,
    )
    op.create_index("ix_jobs_status", "jobs", ["status"], unique=False)
    op.create_table(
        "job_routings",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("receiving_company_id", sa.UUID(), nullable=False),
        sa.Column("match_score", sa.Numeric(precision=8, scale=3), server_default=sa.text("0"), nullable=False),
        sa.Column("match_reasons", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lookup_required", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("delivery_mode", sa.String(length=16), nullable=True),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column(
            "external_refs",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("external_status", sa.String(length=32), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revenue", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("last_error_code", sa.String(length=64), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "sequence",
            sa.BigInteger(),
            server_default=sa.text("nextval('job_routings_sequence_seq')"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status <> 'claimed' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name=op.f("ck_job_routings_claimed_has_lease"),
        ),
        sa.CheckConstraint(
            "status <> 'synced' OR external_id IS NOT NULL",
            name=op.f("ck_job_routings_synced_has_external_id"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'claimed', 'needs_reconcile', 'synced', 'failed', 'no_integration')",
            name=op.f("ck_job_routings_status_known"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_job_routings_attempts_non_negative")),
        sa.CheckConstraint("lease_version >= 0", name=op.f("ck_job_routings_lease_version_non_negative")),
        sa.CheckConstraint("revenue IS NULL OR revenue >= 0", name=op.f("ck_job_routings_revenue_non_negative")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_routings_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["receiving_company_id"],
            ["companies.id"],
            name=op.f("fk_job_routings_receiving_company_id_companies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_routings")),
        sa.UniqueConstraint("job_id", "receiving_company_id", name=op.f("uq_job_routings_job_id_receiving_company_id")),
        sa.UniqueConstraint("sequence", name=op.f("uq_job_routings_sequence")),
    )
    op.create_index(
        "ix_job_routings_claim",
        "job_routings",
        ["receiving_company_id", "status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(
        "ix_job_routings_due_pending",
        "job_routings",
        ["next_attempt_at", "receiving_company_id"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_job_routings_external_id", "job_routings", ["external_id"], unique=False)
    op.create_index(
        "ix_job_routings_lease",
        "job_routings",
        ["lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'claimed'"),
    )
    op.create_index(
        "ix_job_routings_open_synced",
        "job_routings",
        ["receiving_company_id", "synced_at"],
        unique=False,
        postgresql_where=sa.text(
            "status = 'synced' AND (external_status IS NULL OR external_status NOT IN ('completed', 'canceled', 'dismissed'))"
        ),
    )
    op.create_index("ix_job_routings_status_updated", "job_routings", ["status", "updated_at"], unique=False)
    op.create_table(
        "sync_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("routing_id", sa.UUID(), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=True),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=16), server_default="deliver", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), server_default="in_flight", nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("provider_trace_id", sa.String(length=128), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('in_flight', 'synced', 'adopted', 'not_found', 'retryable', 'rate_limited', 'failed', 'unknown', 'auth_failed', 'abandoned')",
            name=op.f("ck_sync_attempts_outcome_known"),
        ),
        sa.CheckConstraint(
            "finished_at IS NULL OR finished_at >= started_at",
            name=op.f("ck_sync_attempts_finished_after_start"),
        ),
        sa.ForeignKeyConstraint(
            ["routing_id"], ["job_routings.id"], name=op.f("fk_sync_attempts_routing_id_job_routings")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_attempts")),
    )
    op.create_index("ix_sync_attempts_routing_id", "sync_attempts", ["routing_id", "id"], unique=False)
    op.create_index("ix_sync_attempts_started_at", "sync_attempts", ["started_at"], unique=False)

    # updated_at comes from the database clock on every UPDATE, whoever writes the row (ORM, raw SQL, main app)
    op.execute(
        """
        CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END;
        $$
        """
    )
    for table in UPDATED_AT_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )


def downgrade() -> None:
    for table in UPDATED_AT_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_updated_at ON {table}")
    op.execute("DROP FUNCTION IF EXISTS set_updated_at()")
    op.drop_index("ix_sync_attempts_started_at", table_name="sync_attempts")
    op.drop_index("ix_sync_attempts_routing_id", table_name="sync_attempts")
    op.drop_table("sync_attempts")
    op.drop_index("ix_job_routings_status_updated", table_name="job_routings")
    op.drop_index(
        "ix_job_routings_open_synced",
        table_name="job_routings",
        postgresql_where=sa.text(
            "status = 'synced' AND (external_status IS NULL OR external_status NOT IN ('completed', 'canceled', 'dismissed'))"
        ),
    )
    op.drop_index("ix_job_routings_lease", table_name="job_routings", postgresql_where=sa.text("status = 'claimed'"))
    op.drop_index("ix_job_routings_external_id", table_name="job_routings")
    op.drop_index(
        "ix_job_routings_due_pending",
        table_name="job_routings",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_job_routings_claim", table_name="job_routings")
    op.drop_table("job_routings")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_index("ix_jobs_created_by_company_id_created_at", table_name="jobs")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_technicians_company_id", table_name="technicians")
    op.drop_table("technicians")
    op.drop_index("ix_provider_connections_tenant", table_name="provider_connections")
    op.drop_table("provider_connections")
    op.drop_index("ix_company_skills_skill", table_name="company_skills")
    op.drop_table("company_skills")
    op.drop_table("provider_rate_limits")
    op.drop_index("ix_companies_service_zip_codes", table_name="companies", postgresql_using="gin")
    op.drop_table("companies")
    op.drop_index("ix_audit_log_entity", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.execute(sa.schema.DropSequence(sa.Sequence("job_routings_sequence_seq")))
