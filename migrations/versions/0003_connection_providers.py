"""connection providers: provider-neutral connections (issue 11)

A connection names its provider; the provider's own settings move into the JSON object `settings`, its secrets
into the JSON object `secrets_encrypted` (each value the unchanged Fernet ciphertext: no key is needed to
migrate), and `tenant_id` becomes `account_id`. The rate limiter's rows are keyed by (provider, account_id).
ServiceTitan connections migrate without loss, both ways; a downgrade refuses while connections of another
provider exist (the old schema cannot hold them).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

T = "provider_connections"
_ST_IDS = ("booking_provider_id", "business_unit_id", "job_type_id", "campaign_id")
_ST_SECRETS = ("client_id", "client_secret", "app_key")


def upgrade() -> None:
    op.add_column(T, sa.Column("account_id", sa.String(length=64), nullable=True))
    for name in ("settings", "secrets_encrypted"):
        op.add_column(
            T,
            sa.Column(
                name, postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
            ),
        )
    op.execute(
        """
        UPDATE provider_connections
           SET account_id = tenant_id,
               settings = jsonb_strip_nulls(jsonb_build_object(
                   'tenant_id', tenant_id,
                   'booking_provider_id', booking_provider_id,
                   'business_unit_id', business_unit_id,
                   'job_type_id', job_type_id,
                   'campaign_id', campaign_id,
                   'priority', priority,
                   'external_data_guid', external_data_guid)),
               secrets_encrypted = jsonb_build_object(
                   'client_id', client_id_encrypted,
                   'client_secret', client_secret_encrypted,
                   'app_key', app_key_encrypted)
        """
    )
    op.alter_column(T, "account_id", nullable=False)
    for name in ("booking_needs_provider", "job_needs_ids", "priority_known", "provider_known", "delivery_mode_known"):
        op.drop_constraint(op.f(f"ck_{T}_{name}"), T, type_="check")
    op.drop_index("ix_provider_connections_tenant", table_name=T)
    for column in (
        "tenant_id",
        "client_id_encrypted",
        "client_secret_encrypted",
        "app_key_encrypted",
        *_ST_IDS,
        "priority",
        "external_data_guid",
    ):
        op.drop_column(T, column)
    op.create_check_constraint(op.f(f"ck_{T}_provider_known"), T, "provider IN ('servicetitan', 'housecallpro')")
    op.create_check_constraint(op.f(f"ck_{T}_delivery_mode_known"), T, "delivery_mode IN ('booking', 'job', 'lead')")
    op.create_check_constraint(op.f(f"ck_{T}_settings_object"), T, "jsonb_typeof(settings) = 'object'")
    op.create_check_constraint(op.f(f"ck_{T}_secrets_object"), T, "jsonb_typeof(secrets_encrypted) = 'object'")
    op.create_check_constraint(op.f(f"ck_{T}_account_not_blank"), T, "length(trim(account_id)) > 0")
    op.create_check_constraint(
        op.f(f"ck_{T}_booking_needs_provider"),
        T,
        "provider <> 'servicetitan' OR delivery_mode <> 'booking' OR settings ? 'booking_provider_id'",
    )
    op.create_check_constraint(
        op.f(f"ck_{T}_job_needs_ids"),
        T,
        "provider <> 'servicetitan' OR delivery_mode <> 'job' "
        "OR settings ?& array['business_unit_id', 'job_type_id', 'campaign_id']",
    )
    op.create_index("ix_provider_connections_account", T, ["provider", "account_id"], unique=False)
    op.alter_column("provider_rate_limits", "tenant_id", new_column_name="account_id")


def downgrade() -> None:
    others = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM provider_connections WHERE provider <> 'servicetitan'"))
        .scalar()
    )
    if others:
        raise RuntimeError(
            f"{others} connection(s) of providers other than ServiceTitan exist; the schema before 0003 cannot "
            "hold them. Delete them first (their companies' routings then wait in no_integration)."
        )
    op.execute("DELETE FROM provider_rate_limits WHERE provider <> 'servicetitan'")
    op.alter_column("provider_rate_limits", "account_id", new_column_name="tenant_id")
    op.drop_index("ix_provider_connections_account", table_name=T)
    for name in (
        "job_needs_ids",
        "booking_needs_provider",
        "account_not_blank",
        "secrets_object",
        "settings_object",
        "delivery_mode_known",
        "provider_known",
    ):
        op.drop_constraint(op.f(f"ck_{T}_{name}"), T, type_="check")
    op.add_column(T, sa.Column("tenant_id", sa.String(length=64), nullable=True))
    for name in _ST_SECRETS:
        op.add_column(T, sa.Column(f"{name}_encrypted", sa.Text(), nullable=True))
    for name in _ST_IDS:
        op.add_column(T, sa.Column(name, sa.BigInteger(), nullable=True))
    op.add_column(T, sa.Column("priority", sa.String(length=16), server_default="Normal", nullable=False))
    op.add_column(T, sa.Column("external_data_guid", sa.String(length=64), nullable=True))
    op.execute(
        """
        UPDATE provider_connections
           SET tenant_id = coalesce(settings->>'tenant_id', account_id),
               client_id_encrypted = secrets_encrypted->>'client_id',
               client_secret_encrypted = secrets_encrypted->>'client_secret',
               app_key_encrypted = secrets_encrypted->>'app_key',
               booking_provider_id = (settings->>'booking_provider_id')::bigint,
               business_unit_id = (settings->>'business_unit_id')::bigint,
               job_type_id = (settings->>'job_type_id')::bigint,
               campaign_id = (settings->>'campaign_id')::bigint,
               priority = coalesce(settings->>'priority', 'Normal'),
               external_data_guid = settings->>'external_data_guid'
        """
    )
    for column in ("tenant_id", *(f"{name}_encrypted" for name in _ST_SECRETS)):
        op.alter_column(T, column, nullable=False)
    op.drop_column(T, "secrets_encrypted")
    op.drop_column(T, "settings")
    op.drop_column(T, "account_id")
    op.create_check_constraint(op.f(f"ck_{T}_provider_known"), T, "provider IN ('servicetitan')")
    op.create_check_constraint(op.f(f"ck_{T}_delivery_mode_known"), T, "delivery_mode IN ('booking', 'job')")
    op.create_check_constraint(op.f(f"ck_{T}_priority_known"), T, "priority IN ('Low', 'Normal', 'High', 'Urgent')")
    op.create_check_constraint(
        op.f(f"ck_{T}_booking_needs_provider"), T, "delivery_mode <> 'booking' OR booking_provider_id IS NOT NULL"
    )
    op.create_check_constraint(
        op.f(f"ck_{T}_job_needs_ids"),
        T,
        "delivery_mode <> 'job' OR (business_unit_id IS NOT NULL AND job_type_id IS NOT NULL "
        "AND campaign_id IS NOT NULL)",
    )
    op.create_index("ix_provider_connections_tenant", T, ["provider", "tenant_id"], unique=False)
