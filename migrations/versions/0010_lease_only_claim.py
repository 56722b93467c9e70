"""a claim writes the lease only: its update of 200 routings can be HOT (no index entry)

A claim used to set `status = 'claimed'` on every routing it leased. `status` is in the key or the predicate of most
of `job_routings`' indexes, so that update could never be HOT: each claimed routing cost a new heap version plus an
entry in six indexes, most of a claim's time (docs/scaling.md, "Where the next bottleneck is", item 3). Now a claim
writes only `lease_owner`, `lease_expires_at` and `lease_version`, and the routing becomes `claimed` in the
transaction of the run's first write to it (the attempt recorded before its lookup or request). For that update to
be HOT, no index may name a column it writes, and the page must have room:

- `ix_job_routings_lease` (lease_expires_at WHERE status = 'claimed') is replaced by `ix_job_routings_claimed`
  (receiving_company_id WHERE status = 'claimed'): lease expiry and the owners of leases scan the routings in
  progress through it and read their lease from the row;
- `updated_at` (indexed in `ix_job_routings_status_updated`) is no longer touched by an update that writes only the
  lease: `trg_job_routings_updated_at` fires for updates naming any other column (its column list is every column
  but the three lease columns and `updated_at`; tests/db/test_migration_0010.py keeps it complete);
- fillfactor 85 leaves room on each new heap page for the row's next version (existing pages get it as they are
  rewritten; `VACUUM FULL job_routings` applies it at once, under an exclusive lock);
- `routing_claims`: one row per claim (owner, company, the routings' ids), the only place a routing leased and not
  yet written can be found by its owner without an index on `lease_owner` (which would make the claim not HOT):
  the run-end release and the sensor's dead-run check read it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 11:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# every column of job_routings but the lease (lease_owner, lease_expires_at, lease_version) and updated_at itself
ROUTING_COLUMNS_BUT_LEASE = (
    "id",
    "job_id",
    "receiving_company_id",
    "match_score",
    "match_reasons",
    "status",
    "attempts",
    "next_attempt_at",
    "lookup_required",
    "delivery_mode",
    "external_id",
    "external_refs",
    "external_status",
    "completed_at",
    "revenue",
    "last_error_code",
    "last_error_message",
    "synced_at",
    "sequence",
    "created_at",
)


def upgrade() -> None:
    op.create_table(
        "routing_claims",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("company_id", sa.Uuid(), nullable=False),
        sa.Column("routing_ids", postgresql.ARRAY(postgresql.UUID(as_uuid=True)), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_claims")),
    )
    op.create_index("ix_routing_claims_owner", "routing_claims", ["owner"], unique=False)
    # routings a run holds now were claimed before this migration: give each holder its receipt
    op.execute(
        """
        INSERT INTO routing_claims (owner, company_id, routing_ids)
        SELECT lease_owner, receiving_company_id, array_agg(id)
          FROM job_routings WHERE status = 'claimed' GROUP BY lease_owner, receiving_company_id
        """
    )
    op.create_index(
        "ix_job_routings_claimed",
        "job_routings",
        ["receiving_company_id"],
        unique=False,
        postgresql_where=sa.text("status = 'claimed'"),
    )
    op.drop_index("ix_job_routings_lease", table_name="job_routings")
    op.execute("DROP TRIGGER IF EXISTS trg_job_routings_updated_at ON job_routings")
    op.execute(
        f"CREATE TRIGGER trg_job_routings_updated_at BEFORE UPDATE OF {', '.join(ROUTING_COLUMNS_BUT_LEASE)} "
        "ON job_routings FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
    )
    op.execute("ALTER TABLE job_routings SET (fillfactor = 85)")


def downgrade() -> None:
    # routings leased and not yet written become claimed again, as the claim of 0009 left them
    op.execute(
        """
        UPDATE job_routings SET status = 'claimed', lookup_required = lookup_required OR status = 'needs_reconcile'
         WHERE status IN ('pending', 'needs_reconcile') AND lease_owner IS NOT NULL AND lease_expires_at > now()
        """
    )
    op.execute("ALTER TABLE job_routings RESET (fillfactor)")
    op.execute("DROP TRIGGER IF EXISTS trg_job_routings_updated_at ON job_routings")
    op.execute(
        "CREATE TRIGGER trg_job_routings_updated_at BEFORE UPDATE ON job_routings "
        "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
    )
    op.create_index(
        "ix_job_routings_lease",
        "job_routings",
        ["lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'claimed'"),
    )
    op.drop_index("ix_job_routings_claimed", table_name="job_routings")
    op.drop_index("ix_routing_claims_owner", table_name="routing_claims")
    op.drop_table("routing_claims")
