"""hot-path indexes for due routings: the claim and the sensor stop after what they need

`ix_job_routings_due` (receiving_company_id, next_attempt_at, sequence) and `ix_job_routings_due_sequence`
(receiving_company_id, sequence), both partial on status IN ('pending', 'needs_reconcile'), the claim's status set:
the claim walks the first in claim order and stops after its batch; the sensor probes both per company. They
replace `ix_job_routings_due_pending` (next_attempt_at, receiving_company_id) WHERE status = 'pending', which no
query could use any more (the sensor asks for both statuses; the oldest-due check reads every due row either way).

Built CONCURRENTLY (outside the migration's transaction): job_routings is the hot table, and a plain CREATE INDEX
would block every claim and insert for as long as the build takes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 07:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = "status IN ('pending', 'needs_reconcile')"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_job_routings_due",
            "job_routings",
            ["receiving_company_id", "next_attempt_at", "sequence"],
            unique=False,
            postgresql_where=sa.text(DUE),
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_job_routings_due_sequence",
            "job_routings",
            ["receiving_company_id", "sequence"],
            unique=False,
            postgresql_where=sa.text(DUE),
            postgresql_concurrently=True,
        )
        op.drop_index("ix_job_routings_due_pending", table_name="job_routings", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_job_routings_due_pending",
            "job_routings",
            ["next_attempt_at", "receiving_company_id"],
            unique=False,
            postgresql_where=sa.text("status = 'pending'"),
            postgresql_concurrently=True,
        )
        op.drop_index("ix_job_routings_due_sequence", table_name="job_routings", postgresql_concurrently=True)
        op.drop_index("ix_job_routings_due", table_name="job_routings", postgresql_concurrently=True)
