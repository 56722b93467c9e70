"""Matching as a table of cases (pure scoring), plus the database-side candidate filter."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from integration_core.db.models import SkillLevel
from integration_core.referrals.matching import Candidate, load_candidates, match_job, rank, required_skills

E, I, B = SkillLevel.expert, SkillLevel.intermediate, SkillLevel.basic


def cand(
    name: str,
    skills: dict[str, tuple[SkillLevel, bool]] | None = None,
    *,
    connected: bool = True,
    trade: str | None = None,
    cid: str | None = None,
) -> Candidate:
    return Candidate(
        company_id=uuid.UUID(cid) if cid else uuid.uuid5(uuid.NAMESPACE_DNS, name),
        name=name,
        trade=trade,
        skills=skills or {},
        connected=connected,
    )


CASES = [
    # (case, candidates, required_skills, skill_levels, category, expected order of names)
    (
        "no skills: connected first, then by name",
        [cand("Zeta"), cand("Alpha", connected=False), cand("Beta")],
        [],
        {},
        None,
        ["Beta", "Zeta", "Alpha"],
    ),
    (
        "meets beats below the required level",
        [cand("Low", {"plumbing": (B, False)}), cand("High", {"plumbing": (E, False)})],
        [],
        {"plumbing": "intermediate"},
        None,
        ["High", "Low"],
    ),
    (
        "a missing required skill is penalised",
        [
            cand("One", {"plumbing": (E, False)}),
            cand("Both", {"plumbing": (B, False), "water_heater": (B, False)}),
        ],
        ["plumbing", "water_heater"],
        {},
        None,
        ["Both", "One"],
    ),
    (
        "a company with none of the required skills is not a candidate",
        [cand("Roofer", {"roofing": (E, True)}), cand("Plumber", {"plumbing": (I, False)})],
        ["plumbing"],
        {},
        None,
        ["Plumber"],
    ),
    (
        "a skill listed without a level still counts (the old system ignored it)",
        [cand("Has", {"drywall": (B, False)}), cand("Hasnt", {"paint": (E, False), "drywall": (B, False)})],
        ["drywall"],
        {},
        None,
        ["Has", "Hasnt"],
    ),
    (
        "primary skill bonus decides an otherwise equal pair",
        [cand("Side", {"hvac": (E, False)}), cand("Core", {"hvac": (E, True)})],
        ["hvac"],
        {},
        None,
        ["Core", "Side"],
    ),
    (
        "category matching the trade earns a bonus",
        [
            cand("Generalist", {"plumbing": (E, False)}),
            cand("Specialist", {"plumbing": (E, False)}, trade="plumbing"),
        ],
        ["plumbing"],
        {},
        "Plumbing",
        ["Specialist", "Generalist"],
    ),
    (
        "a connected company wins a tie on skills",
        [cand("Aaa", {"hvac": (I, False)}, connected=False), cand("Zzz", {"hvac": (I, False)})],
        ["hvac"],
        {},
        None,
        ["Zzz", "Aaa"],
    ),
    (
        "full tie: by name, case-insensitive",
        [cand("bravo", {"hvac": (I, False)}), cand("Alpha", {"hvac": (I, False)})],
        ["hvac"],
        {},
        None,
        ["Alpha", "bravo"],
    ),
    (
        "exceeding the level earns more than just meeting it",
        [cand("Meets", {"pest": (I, False)}), cand("Exceeds", {"pest": (E, False)})],
        [],
        {"pest": "intermediate"},
        None,
        ["Exceeds", "Meets"],
    ),
    (
        "skill names are normalised (case, spaces, hyphens)",
        [cand("Heater", {"water_heater": (I, False)})],
        ["Water Heater"],
        {},
        None,
        ["Heater"],
    ),
]


@pytest.mark.parametrize(
    ("case", "candidates", "skills", "levels", "category", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_ranking(
    case: str,
    candidates: list[Candidate],
    skills: list[str],
    levels: dict[str, str],
    category: str | None,
    expected: list[str],
) -> None:
    ranked = rank(candidates, required_skills(skills, levels), category)
    assert [m.company_name for m in ranked] == expected, case


def test_full_tie_falls_back_to_id_and_is_deterministic() -> None:
    a = cand("Same", {"hvac": (I, False)}, cid="00000000-0000-0000-0000-000000000002")
    b = cand("Same", {"hvac": (I, False)}, cid="00000000-0000-0000-0000-000000000001")
    req = required_skills(["hvac"], {})
    assert [m.company_id for m in rank([a, b], req, None)] == [b.company_id, a.company_id]
    assert [m.company_id for m in rank([b, a], req, None)] == [b.company_id, a.company_id]


def test_score_and_reasons_are_explained() -> None:
    [m] = rank([cand("P", {"plumbing": (E, True)})], required_skills([], {"plumbing": "intermediate"}), None)
    # meets (3.0) + one level above (0.5) + primary (1.0) + connected (0.5)
    assert m.score == Decimal("5.0")
    assert "plumbing expert >= intermediate (+3.5)" in m.reason_text
    assert "primary plumbing" in m.reason_text


# --- against the database: area, active, referrer ---------------------------------------------------------


def _company(
    session: Session,
    name: str,
    zips: list[str],
    *,
    active: bool = True,
    skills: list[tuple[str, str, bool]] | None = None,
) -> uuid.UUID:
    from integration_core.referrals.directory import create_company
    from integration_core.schemas import CompanyCreate

    data = CompanyCreate.model_validate(
        {
            "name": name,
            "service_zip_codes": zips,
            "active": active,
            "skills": [{"skill": s, "level": lvl, "primary": p} for s, lvl, p in (skills or [])],
        }
    )
    return create_company(session, data, actor="test").id


def test_candidates_filtered_by_area_activity_and_referrer(session_factory) -> None:
    with session_factory() as session, session.begin():
        referrer = _company(session, "Referrer", ["90210"], skills=[("plumbing", "expert", True)])
        inside = _company(session, "Inside", ["90210", "90211"], skills=[("plumbing", "basic", False)])
        _company(session, "Outside", ["10001"], skills=[("plumbing", "expert", True)])
        _company(session, "Inactive", ["90210"], active=False, skills=[("plumbing", "expert", True)])
        matches = match_job(
            session,
            zip_code="90210",
            referrer_id=referrer,
            skills=["plumbing"],
            levels={},
            category=None,
            top_n=5,
        )
    assert [m.company_id for m in matches] == [inside]


def test_top_n_limits_routings(session_factory) -> None:
    with session_factory() as session, session.begin():
        referrer = _company(session, "Referrer", ["78701"])
        for i in range(4):
            _company(session, f"C{i}", ["78701"], skills=[("hvac", "expert", i == 0)])
        matches = match_job(
            session,
            zip_code="78701",
            referrer_id=referrer,
            skills=["hvac"],
            levels={},
            category=None,
            top_n=2,
        )
    assert [m.company_name for m in matches] == ["C0", "C1"]


def test_candidates_read_are_the_companies_holding_a_required_skill(session_factory) -> None:
    """Intake reads only the companies that could match (score turns away those with none of the required skills),
    each with all its skills and its connection flag; with no skill required, every company of the area."""
    with session_factory() as session, session.begin():
        referrer = _company(session, "Referrer", ["73301"])
        both = _company(session, "Both", ["73301"], skills=[("plumbing", "expert", True), ("hvac", "basic", False)])
        _company(session, "Roofer", ["73301"], skills=[("roofing", "expert", True)])
        bare = _company(session, "Bare", ["73301"])
        plumbers = load_candidates(session, zip_code="73301", exclude_company_id=referrer, skills=["plumbing"])
        everyone = load_candidates(session, zip_code="73301", exclude_company_id=referrer)
    assert [(c.company_id, c.skills, c.connected) for c in plumbers] == [
        (both, {"plumbing": (SkillLevel.expert, True), "hvac": (SkillLevel.basic, False)}, False)
    ]
    assert {c.name for c in everyone} == {"Both", "Roofer", "Bare"}
    assert next(c for c in everyone if c.company_id == bare).skills == {}
