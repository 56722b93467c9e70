"""webhook inbox — reserved for issue 12 (webhook inbox and signing secrets); a no-op until that work fills it in

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
