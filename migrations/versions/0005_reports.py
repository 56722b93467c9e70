"""reports: readable, stable partition keys for companies; daily report tables

1. `companies.partition_key` (unique, not null): the company's Dagster partition key, a slug of its name plus the
   start of its id (`bright-spark-electric-3f2a`). Issued once, by the database, when the company is inserted
   (whoever inserts it: the API, seeding, raw SQL, bench) and never changed afterwards: a rename changes the name,
   not the key (an UPDATE that changes it is refused). Every key ever issued is kept in `company_partition_keys`
   (no foreign key): deleting a company never frees its key for another company; the same company id inserted
   again (re-seeding a deleted demo company) gets its own key back. On a clash the id part grows (4, 6, ... 32 hex
   digits), so two companies with the same name never share a key. Existing companies get their keys here,
   oldest first.
2. `report_delivery_daily`, `report_referral_outcomes_daily`: one row per day and company (docs/reports.md),
   written by `integration_core.reports` (delete + insert of a day in one transaction).
3. `ix_job_routings_created_at`: the delivery report reads one day's routings (built CONCURRENTLY: hot table).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACCENTED = "áàâäãåāçćčéèêëēėęíìîïīñńóòôöõøōśšúùûüūýÿžźż"
_PLAIN = "aaaaaaaccceeeeeeeiiiiinnooooooossuuuuuyyzzz"

SLUG_FUNCTION = f"""
CREATE FUNCTION company_partition_key_slug(p_name text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(
        nullif(trim(BOTH '-' FROM left(trim(BOTH '-' FROM regexp_replace(
            translate(lower(p_name), '{_ACCENTED}', '{_PLAIN}'), '[^a-z0-9]+', '-', 'g')), 48)), ''),
        'company')
$$
"""  # noqa: S608 - module constants only

ISSUE_FUNCTION = """
CREATE FUNCTION issue_company_partition_key(p_name text, p_id uuid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    base text := company_partition_key_slug(p_name);
    hex text := replace(p_id::text, '-', '');
    n int := 4;
    candidate text;
BEGIN
    -- the same company (same id) inserted again gets its own key back: its history stays its own
    SELECT k.partition_key INTO candidate FROM company_partition_keys k
     WHERE k.company_id = p_id ORDER BY k.issued_at, k.partition_key LIMIT 1;
    IF FOUND THEN
        RETURN candidate;
    END IF;
    LOOP
        candidate := base || '-' || left(hex, n);
        INSERT INTO company_partition_keys (partition_key, company_id) VALUES (candidate, p_id)
            ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN candidate;
        END IF;
        IF n >= 32 THEN
            RAISE EXCEPTION 'no free partition key for company % (%)', p_id, base USING ERRCODE = 'unique_violation';
        END IF;
        n := n + 2;
    END LOOP;
END;
$$
"""

INSERT_TRIGGER_FUNCTION = """
CREATE FUNCTION assign_company_partition_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.partition_key IS NULL THEN
        NEW.partition_key := issue_company_partition_key(NEW.name, NEW.id);
    ELSE
        -- an explicit key must be one never issued to another company
        INSERT INTO company_partition_keys (partition_key, company_id) VALUES (NEW.partition_key, NEW.id)
            ON CONFLICT (partition_key) DO UPDATE SET company_id = EXCLUDED.company_id
            WHERE company_partition_keys.company_id = EXCLUDED.company_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'partition key % was issued to another company', NEW.partition_key
                USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    RETURN NEW;
END;
$$
"""

FREEZE_TRIGGER_FUNCTION = """
CREATE FUNCTION freeze_company_partition_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a company''s partition key never changes (% -> %)', OLD.partition_key, NEW.partition_key
        USING ERRCODE = 'check_violation';
END;
$$
"""


def _report_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "company_partition_keys",
        sa.Column("partition_key", sa.String(length=100), nullable=False),
        sa.Column("company_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("partition_key", name=op.f("pk_company_partition_keys")),
    )
    op.create_index("ix_company_partition_keys_company_id", "company_partition_keys", ["company_id"], unique=False)
    op.add_column("companies", sa.Column("partition_key", sa.String(length=100), nullable=True))
    op.execute(SLUG_FUNCTION)
    op.execute(ISSUE_FUNCTION)
    op.execute(INSERT_TRIGGER_FUNCTION)
    op.execute(FREEZE_TRIGGER_FUNCTION)
    # existing companies, oldest first (the older one keeps the shorter key on a clash); updated_at untouched
    op.execute("ALTER TABLE companies DISABLE TRIGGER trg_companies_updated_at")
    op.execute(
        """
        DO $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT id, name FROM companies WHERE partition_key IS NULL ORDER BY created_at, id LOOP
                UPDATE companies SET partition_key = issue_company_partition_key(r.name, r.id) WHERE id = r.id;
            END LOOP;
        END;
        $$
        """
    )
    op.execute("ALTER TABLE companies ENABLE TRIGGER trg_companies_updated_at")
    op.alter_column("companies", "partition_key", nullable=False)
    op.create_unique_constraint(op.f("uq_companies_partition_key"), "companies", ["partition_key"])
    op.execute(
        "CREATE TRIGGER trg_companies_partition_key BEFORE INSERT ON companies "
        "FOR EACH ROW EXECUTE FUNCTION assign_company_partition_key()"
    )
    op.execute(
        "CREATE TRIGGER trg_companies_partition_key_frozen BEFORE UPDATE ON companies FOR EACH ROW "
        "WHEN (NEW.partition_key IS DISTINCT FROM OLD.partition_key) EXECUTE FUNCTION freeze_company_partition_key()"
    )

    op.create_table(
        "report_delivery_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("receiving_company_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("partition_key", sa.String(length=100), nullable=False),
        sa.Column("company_name", sa.String(length=255), nullable=False),
        sa.Column("routed", sa.Integer(), nullable=False),
        sa.Column("synced", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("still_open", sa.Integer(), nullable=False),
        sa.Column("failure_rate", sa.Float(), nullable=True),
        sa.Column("routed_to_synced_p50_s", sa.Float(), nullable=True),
        sa.Column("routed_to_synced_p95_s", sa.Float(), nullable=True),
        sa.Column("routed_to_synced_max_s", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempts_per_delivery", sa.Float(), nullable=True),
        sa.Column("rate_limited_429", sa.Integer(), nullable=False),
        sa.Column("top_error_codes", sa.String(length=500), nullable=False),
        *_report_columns(),
        sa.PrimaryKeyConstraint("day", "receiving_company_id", "provider", name=op.f("pk_report_delivery_daily")),
    )
    op.create_table(
        "report_referral_outcomes_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("referring_company_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("technician_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("partition_key", sa.String(length=100), nullable=False),
        sa.Column("company_name", sa.String(length=255), nullable=False),
        sa.Column("technician_name", sa.String(length=255), nullable=False),
        sa.Column("referred", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("canceled_dismissed", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Numeric(14, 2), nullable=False),
        sa.Column("conversion_rate", sa.Float(), nullable=True),
        sa.Column("median_days_to_completion", sa.Float(), nullable=True),
        *_report_columns(),
        sa.PrimaryKeyConstraint(
            "day", "referring_company_id", "technician_id", name=op.f("pk_report_referral_outcomes_daily")
        ),
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_job_routings_created_at",
            "job_routings",
            ["created_at"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_job_routings_created_at", table_name="job_routings", postgresql_concurrently=True)
    op.drop_table("report_referral_outcomes_daily")
    op.drop_table("report_delivery_daily")
    op.execute("DROP TRIGGER IF EXISTS trg_companies_partition_key_frozen ON companies")
    op.execute("DROP TRIGGER IF EXISTS trg_companies_partition_key ON companies")
    op.drop_constraint(op.f("uq_companies_partition_key"), "companies", type_="unique")
    op.drop_column("companies", "partition_key")
    op.execute("DROP FUNCTION IF EXISTS freeze_company_partition_key()")
    op.execute("DROP FUNCTION IF EXISTS assign_company_partition_key()")
    op.execute("DROP FUNCTION IF EXISTS issue_company_partition_key(text, uuid)")
    op.execute("DROP FUNCTION IF EXISTS company_partition_key_slug(text)")
    op.drop_index("ix_company_partition_keys_company_id", table_name="company_partition_keys")
    op.drop_table("company_partition_keys")
