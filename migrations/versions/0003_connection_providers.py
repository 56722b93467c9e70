"""connection providers — reserved for issue 11 (provider-neutral connections, Housecall Pro); a no-op until that work fills it in

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
