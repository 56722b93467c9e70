"""webhook inbox (issue 12): per-connection webhook settings, the inbox of verified events, rejected-call counters

`webhook_endpoints` (one row per provider connection; the signing secret Fernet-encrypted), `webhook_events`
(stored before acknowledged; dedup on (provider, dedup_key)), `webhook_rejections` (counted, never a body), and
`ix_job_routings_job_ref`: delivered routings by the provider job id in their refs (an invoice event names only
its job), built CONCURRENTLY.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("connection_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("signature_header", sa.String(length=64), nullable=False),
        sa.Column("signature_encoding", sa.String(length=8), server_default="hex", nullable=False),
        sa.Column("timestamp_header", sa.String(length=64), nullable=True),
        sa.Column("timestamp_tolerance_seconds", sa.Integer(), server_default=sa.text("300"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("signature_encoding IN ('hex', 'base64')", name=op.f("ck_webhook_endpoints_encoding_known")),
        sa.CheckConstraint("length(trim(signature_header)) > 0", name=op.f("ck_webhook_endpoints_header_not_blank")),
        sa.CheckConstraint("timestamp_tolerance_seconds > 0", name=op.f("ck_webhook_endpoints_tolerance_positive")),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["provider_connections.id"],
            name=op.f("fk_webhook_endpoints_connection_id_provider_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_webhook_endpoints")),
    )
    op.execute(
        "CREATE TRIGGER trg_webhook_endpoints_updated_at BEFORE UPDATE ON webhook_endpoints "
        "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.UUID(), nullable=True),
        sa.Column("company_id", sa.UUID(), nullable=True),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="received", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('received', 'applied', 'unmatched', 'error')", name=op.f("ck_webhook_events_status_known")
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_events_attempts_non_negative")),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["provider_connections.id"],
            name=op.f("fk_webhook_events_connection_id_provider_connections"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("provider", "dedup_key", name=op.f("uq_webhook_events_provider_dedup_key")),
    )
    op.create_index(
        "ix_webhook_events_unapplied",
        "webhook_events",
        ["received_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'received'"),
    )
    op.create_index("ix_webhook_events_provider_status", "webhook_events", ["provider", "status"], unique=False)
    op.create_index("ix_webhook_events_external_id", "webhook_events", ["external_id"], unique=False)
    op.create_table(
        "webhook_rejections",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("connection_key", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("provider", "connection_key", "reason", name=op.f("pk_webhook_rejections")),
    )
    # job_routings is the hot table: built CONCURRENTLY (outside the migration's transaction), as in 0002
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_job_routings_job_ref ON job_routings "
            "((external_refs ->> 'job_id')) WHERE status = 'synced'"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_job_routings_job_ref")
    op.drop_table("webhook_rejections")
    op.drop_index("ix_webhook_events_external_id", table_name="webhook_events")
    op.drop_index("ix_webhook_events_provider_status", table_name="webhook_events")
    op.drop_index(
        "ix_webhook_events_unapplied", table_name="webhook_events", postgresql_where=sa.text("status = 'received'")
    )
    op.drop_table("webhook_events")
    op.execute("DROP TRIGGER IF EXISTS trg_webhook_endpoints_updated_at ON webhook_endpoints")
    op.drop_table("webhook_endpoints")
