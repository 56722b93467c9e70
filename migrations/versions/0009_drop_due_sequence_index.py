"""drop `ix_job_routings_due_sequence`: no query reads it any more

Migration 0002 built `ix_job_routings_due_sequence` (receiving_company_id, sequence) WHERE status IN ('pending',
'needs_reconcile') for the sensor's per-company `max(sequence)` of the due routings, a figure nothing has ever used
(the sensor keys its runs by partition and tick). The sensor's query no longer asks for it: a third of that query's
buffer reads at 1,000 companies (500 backward probes of the 1,500 per evaluation). Without the index, every routing
written as due (intake, a run handing back what it did not send, a retry from the dead letters) writes one index
entry fewer.

Dropped CONCURRENTLY (no intake or claim waits); downgrade builds it again the same way (migration 0002).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 04:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_job_routings_due_sequence"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")  # left invalid by an interrupted build
        op.create_index(
            NAME,
            "job_routings",
            ["receiving_company_id", "sequence"],
            unique=False,
            postgresql_where=sa.text("status IN ('pending', 'needs_reconcile')"),
            postgresql_concurrently=True,
        )
