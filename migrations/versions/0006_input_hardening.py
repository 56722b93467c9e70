"""input hardening: company skills stored normalised, each once

Skills are normalised at input since this revision (`schemas.SkillName`: the matcher's `normalize_skill`, so
"Water Heater", "water-heater" and "water_heater" are one skill, `water_heater`). Existing rows are brought in line:

1. every `company_skills.skill` is normalised; where a company had several spellings of one skill, one row is
   kept — the highest level, primary if any of them was — and the others are deleted. The existing unique
   constraint (company_id, skill) is thus on the normalised value.
2. `ck_company_skills_skill_normalised`: no upper-case ASCII letter, whitespace or hyphen in a stored skill.

Downgrade drops the check; the spellings merged in (1) are not restored (they were one skill).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "ck_company_skills_skill_normalised"
CHECK_SQL = "skill !~ '[A-Z[:space:]-]'"
_RANK = {"basic": 0, "intermediate": 1, "expert": 2}


def _normalise(name: str) -> str:
    # integration_core.referrals.matching.normalize_skill as of this revision (a migration keeps its own copy)
    return "_".join(name.strip().lower().replace("-", " ").split())


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, company_id, skill, level, is_primary FROM company_skills ORDER BY company_id, id")
    ).all()
    groups: dict[tuple[object, str], list[sa.Row[tuple[int, object, str, str, bool]]]] = {}
    for row in rows:
        groups.setdefault((row.company_id, _normalise(row.skill)), []).append(row)
    for (_company, skill), members in groups.items():
        keep = members[0]
        level = max((m.level for m in members), key=lambda lvl: _RANK.get(lvl, -1))
        primary = any(m.is_primary for m in members)
        others = [m.id for m in members[1:]]
        if others:
            conn.execute(sa.text("DELETE FROM company_skills WHERE id = ANY(:ids)"), {"ids": others})
        if (keep.skill, keep.level, keep.is_primary) != (skill, level, primary):
            conn.execute(
                sa.text(
                    "UPDATE company_skills SET skill = :skill, level = :level, is_primary = :primary WHERE id = :id"
                ),
                {"skill": skill, "level": level, "primary": primary, "id": keep.id},
            )
    op.create_check_constraint(op.f(CHECK), "company_skills", CHECK_SQL)


def downgrade() -> None:
    op.drop_constraint(op.f(CHECK), "company_skills", type_="check")
