"""Which companies receive a referral, and why.

Candidates are active companies, other than the referrer, whose service area contains the job's zip code.
Each candidate is scored from its skills against the job's required skills (see `SCORING`); the top N by a
deterministic order (score, then connected, then name, then id) receive a routing. The reason string stored on
the routing says, in a line, how the score came about.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased

from integration_core.db.models import Company, CompanySkill, ProviderConnection, SkillLevel

# Points, kept in one place so the table of cases in tests/test_matching.py reads against them.
MEETS = Decimal("3.0")  # company level >= required level (or no level required)
PER_LEVEL_ABOVE = Decimal("0.5")  # each level above the required one
BELOW = Decimal("1.0")  # has the skill, below the required level ...
PER_LEVEL_BELOW = Decimal("1.0")  # ... minus this per level short
MISSING = Decimal("-3.0")  # a required skill the company does not have
PRIMARY = Decimal("1.0")  # the matched skill is one of the company's primary skills
CATEGORY = Decimal("1.5")  # the job's category is the company's trade
CONNECTED = Decimal("0.5")  # an enabled provider connection: the routing can be delivered


@dataclass(frozen=True)
class RequiredSkill:
    skill: str
    level: SkillLevel | None  # None: any level will do


@dataclass(frozen=True)
class Candidate:
    company_id: uuid.UUID
    name: str
    trade: str | None
    skills: dict[str, tuple[SkillLevel, bool]]  # skill -> (level, primary)
    connected: bool


@dataclass(frozen=True)
class Match:
    company_id: uuid.UUID
    company_name: str
    score: Decimal
    connected: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reason_text(self) -> str:
        return "; ".join(self.reasons)


def normalize_skill(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def required_skills(skills: list[str], levels: dict[str, str]) -> list[RequiredSkill]:
    """Union of `required_skills` and the keys of `skill_levels`, in a stable order (a skill listed without
    a level is still required: the old system silently ignored those)."""
    merged: dict[str, SkillLevel | None] = {}
    for s in skills:
        merged.setdefault(normalize_skill(s), None)
    for s, lvl in levels.items():
        merged[normalize_skill(s)] = SkillLevel(lvl)
    return [RequiredSkill(s, merged[s]) for s in sorted(merged)]


def score(candidate: Candidate, required: list[RequiredSkill], category: str | None) -> Match | None:
    """Score one candidate (already known to serve the job's area); None when it cannot do the work
    (none of the required skills)."""
    total = Decimal(0)
    reasons: list[str] = ["serves the area"]
    covered = 0
    for req in required:
        have = candidate.skills.get(req.skill)
        if have is None:
            total += MISSING
            reasons.append(f"lacks {req.skill} ({MISSING})")
            continue
        level, primary = have
        covered += 1
        need = req.level.rank if req.level else level.rank
        if level.rank >= need:
            pts = MEETS + PER_LEVEL_ABOVE * (level.rank - need)
            wanted = f" >= {req.level.value}" if req.level else ""
            reasons.append(f"{req.skill} {level.value}{wanted} (+{pts})")
        else:
            pts = BELOW - PER_LEVEL_BELOW * (need - level.rank)
            reasons.append(f"{req.skill} {level.value} < {req.level.value if req.level else level.value} ({pts:+})")
        total += pts
        if primary:
            total += PRIMARY
            reasons.append(f"primary {req.skill} (+{PRIMARY})")
    if required and covered == 0:
        return None
    if category and candidate.trade and normalize_skill(category) == normalize_skill(candidate.trade):
        total += CATEGORY
        reasons.append(f"trade {candidate.trade} (+{CATEGORY})")
    if candidate.connected:
        total += CONNECTED
        reasons.append(f"field-service system connected (+{CONNECTED})")
    else:
        reasons.append("no field-service connection (waits in no_integration)")
    return Match(candidate.company_id, candidate.name, total, candidate.connected, tuple(reasons))


def rank(candidates: list[Candidate], required: list[RequiredSkill], category: str | None) -> list[Match]:
    matches = [m for c in candidates if (m := score(c, required, category)) is not None]
    matches.sort(key=lambda m: (-m.score, not m.connected, m.company_name.lower(), str(m.company_id)))
    return matches


def load_candidates(
    session: Session, *, zip_code: str, exclude_company_id: uuid.UUID, skills: Collection[str] = ()
) -> list[Candidate]:
    """Active companies but the referrer serving `zip_code`, with their skills and whether they are connected.

    With `skills` (normalised names), only companies holding at least one of them: `score` turns every other one
    away (none of the required skills), so they are not read — intake reads the companies that can do the work,
    not every company in a metro area. Plain rows, not ORM objects: this runs on every referral posted."""
    connected = (
        exists()
        .where(ProviderConnection.company_id == Company.id, ProviderConnection.enabled.is_(True))
        .correlate(Company)
    )
    company_filter = [
        Company.active.is_(True),
        Company.id != exclude_company_id,
        Company.service_zip_codes.contains([zip_code]),
    ]
    if skills:
        held = aliased(CompanySkill)  # not the outer join's skills: any of the company's
        company_filter.append(
            exists().where(held.company_id == Company.id, held.skill.in_(sorted(set(skills)))).correlate(Company)
        )
    rows = session.execute(
        select(
            Company.id,
            Company.name,
            Company.trade,
            connected.label("connected"),
            CompanySkill.skill,
            CompanySkill.level,
            CompanySkill.is_primary,
        )
        .outerjoin(CompanySkill, CompanySkill.company_id == Company.id)
        .where(*company_filter)
    ).all()
    found: dict[uuid.UUID, Candidate] = {}
    for company_id, name, trade, is_connected, skill, level, primary in rows:
        candidate = found.get(company_id)
        if candidate is None:
            candidate = found[company_id] = Candidate(company_id, name, trade, {}, bool(is_connected))
        if skill is not None:
            candidate.skills[normalize_skill(skill)] = (SkillLevel(level), primary)
    return list(found.values())


def match_job(
    session: Session,
    *,
    zip_code: str,
    referrer_id: uuid.UUID,
    skills: list[str],
    levels: dict[str, str],
    category: str | None,
    top_n: int,
) -> list[Match]:
    required = required_skills(skills, levels)
    candidates = load_candidates(
        session, zip_code=zip_code, exclude_company_id=referrer_id, skills=[r.skill for r in required]
    )
    return rank(candidates, required, category)[:top_n]
