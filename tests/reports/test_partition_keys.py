"""A company's Dagster partition key: readable, issued once by the database, never changed, never reused."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from integration_core.db.engine import session_scope
from integration_core.referrals.directory import company_for_partition_key, create_company, update_company
from integration_core.schemas import CompanyCreate, CompanyUpdate


def _create(db: Engine, name: str) -> tuple[uuid.UUID, str]:
    with session_scope(db) as session:
        company = create_company(session, CompanyCreate(name=name, service_zip_codes=["90210"]), actor="test")
        return company.id, company.partition_key


def _insert(db: Engine, company_id: uuid.UUID, name: str) -> str:
    """A company inserted as the main app or a bulk load would (raw SQL, no key given)."""
    with db.begin() as conn:
        return str(
            conn.execute(
                text("INSERT INTO companies (id, name) VALUES (:id, :name) RETURNING partition_key"),
                {"id": company_id, "name": name},
            ).scalar_one()
        )


def _key(db: Engine, company_id: uuid.UUID) -> str:
    with db.connect() as conn:
        return str(
            conn.execute(text("SELECT partition_key FROM companies WHERE id = :id"), {"id": company_id}).scalar_one()
        )


def test_key_is_the_name_slug_and_the_id_start_and_survives_a_rename(db: Engine) -> None:
    company_id, key = _create(db, "Bright Spark Electric")
    assert key == f"bright-spark-electric-{company_id.hex[:4]}"

    with session_scope(db) as session:  # through the API's update path
        update_company(session, company_id, CompanyUpdate(name="Bright Spark Electric & Solar"), actor="test")
    with db.begin() as conn:  # and a raw rename
        conn.execute(text("UPDATE companies SET name = 'BSE Holdings' WHERE id = :id"), {"id": company_id})
    assert _key(db, company_id) == key

    with pytest.raises(DBAPIError, match="partition key never changes"), db.begin() as conn:
        conn.execute(text("UPDATE companies SET partition_key = 'something-else' WHERE id = :id"), {"id": company_id})
    assert _key(db, company_id) == key


def test_same_names_never_share_a_key(db: Engine) -> None:
    keys = {_create(db, "Acme Plumbing")[1] for _ in range(5)}
    assert len(keys) == 5 and all(re.fullmatch(r"acme-plumbing-[0-9a-f]{4,32}", k) for k in keys)

    # two ids that start alike: the second key takes more of its id
    first = uuid.UUID("abcd0000-0000-4000-8000-000000000001")
    second = uuid.UUID("abcd0000-0000-4000-8000-000000000002")
    assert _insert(db, first, "Acme Plumbing") == "acme-plumbing-abcd"
    assert _insert(db, second, "Acme Plumbing") == "acme-plumbing-abcd00"


def test_deleting_a_company_never_frees_its_key(db: Engine) -> None:
    gone = uuid.UUID("feed0000-0000-4000-8000-000000000001")
    assert _insert(db, gone, "Zed Roofing") == "zed-roofing-feed"
    with db.begin() as conn:
        conn.execute(text("DELETE FROM companies WHERE id = :id"), {"id": gone})

    newcomer = uuid.UUID("feed0000-0000-4000-8000-000000000002")
    assert _insert(db, newcomer, "Zed Roofing") == "zed-roofing-feed00"  # not the deleted company's key
    with pytest.raises(DBAPIError, match="issued to another company"), db.begin() as conn:
        conn.execute(text("INSERT INTO companies (name, partition_key) VALUES ('Zed', 'zed-roofing-feed')"))

    # the same company inserted again (a demo company re-seeded) gets its own key back: its history is its own
    with db.begin() as conn:
        conn.execute(text("DELETE FROM companies WHERE id = :id"), {"id": newcomer})
    assert _insert(db, newcomer, "Zed Roofing Renamed") == "zed-roofing-feed00"


def test_slugs_of_awkward_names(db: Engine) -> None:
    assert _insert(db, uuid.UUID("12340000-0000-4000-8000-000000000000"), "Café Müller & Söhne") == (
        "cafe-muller-sohne-1234"
    )
    assert _insert(db, uuid.UUID("56780000-0000-4000-8000-000000000000"), "!!! ???") == "company-5678"
    long_key = _insert(db, uuid.UUID("9abc0000-0000-4000-8000-000000000000"), "Very Long Name " * 10)
    assert long_key.endswith("-9abc") and len(long_key) <= 48 + 5 and "--" not in long_key


def test_a_partition_key_or_a_bare_id_names_the_company(db: Engine) -> None:
    company_id, key = _create(db, "Northwind HVAC")
    with session_scope(db) as session:
        by_key = company_for_partition_key(session, key)
        by_id = company_for_partition_key(session, str(company_id))  # a partition from before migration 0005
        assert by_key is not None and by_id is not None and by_key.id == by_id.id == company_id
        assert company_for_partition_key(session, "nobody-0000") is None
        assert company_for_partition_key(session, str(uuid.uuid4())) is None
