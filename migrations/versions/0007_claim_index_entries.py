"""the claim writes fewer index entries: two job_routings indexes become partial

A claim changes `status`, an indexed column, so its UPDATE is never HOT: each claimed row version gets an entry in
every index of job_routings whose predicate it satisfies. Two indexes that no query reads a claimed row through
leave it out from this revision:

- `ix_job_routings_external_id` (external_id) WHERE external_id IS NOT NULL: every query through it names an
  external id (`external_id = :external_id`, which no NULL matches), and a routing has one only once synced.
- `ix_job_routings_status_updated` (status, updated_at) WHERE status <> 'claimed': it serves queries naming a
  status (failure rates, dead letters, the reconcile sweep); those on claimed routings go through
  `ix_job_routings_lease` (WHERE status = 'claimed'), as before.

Each is built CONCURRENTLY under a temporary name, the old one dropped CONCURRENTLY, the new one renamed: no claim
or insert waits for a build (migration 0002). Downgrade rebuilds the full indexes the same way.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> (columns, predicate from this revision on)
INDEXES: dict[str, tuple[list[str], str]] = {
    "ix_job_routings_external_id": (["external_id"], "external_id IS NOT NULL"),
    "ix_job_routings_status_updated": (["status", "updated_at"], "status <> 'claimed'"),
}


def _replace(name: str, columns: list[str], where: str | None) -> None:
    building = f"{name}_0007"
    op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {building}")  # left invalid by an interrupted build
    op.create_index(
        building,
        "job_routings",
        columns,
        unique=False,
        postgresql_where=sa.text(where) if where else None,
        postgresql_concurrently=True,
    )
    op.drop_index(name, table_name="job_routings", postgresql_concurrently=True)
    op.execute(f"ALTER INDEX {building} RENAME TO {name}")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (columns, where) in INDEXES.items():
            _replace(name, columns, where)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (columns, _where) in INDEXES.items():
            _replace(name, columns, None)
