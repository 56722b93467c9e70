"""Key rotation: SECRET_KEYS (newest first, old keys still decrypt) and `si secrets rotate` (a real `si` process on
the test database), which re-encrypts every registered secret with the newest key, in batches, idempotently."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from integration_core import crypto
from integration_core.api.app import create_app
from integration_core.db.models import Base
from integration_core.local.http_server import serve_in_thread
from integration_core.settings import ConfigurationError, Settings

OLD = "test-secret-key-0123456789abcdef"  # the test settings' SECRET_KEY: what the connections are written with
NEW = "the-new-secret-key-0123456789abcdef"
TOKEN = "test-api-token-0123456789"


def _connection(company: int) -> dict[str, Any]:
    return {
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:9",
        "tenant_id": str(1000 + company),
        "client_id": f"cid.client-{company}",
        "client_secret": f"cs1.secret-{company}",
        "app_key": f"ak1.key-{company}",
        "delivery_mode": "booking",
        "booking_provider_id": 7,
    }


def _add_connections(client: httpx.Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = client.post("/api/admin/companies", json={"name": f"Company {i}"})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        assert client.put(f"/api/admin/companies/{cid}/connection", json=_connection(i)).status_code == 201
        ids.append(cid)
    return ids


def _stored(db: Engine) -> list[str]:
    """Every stored ciphertext of every registered column (JSON-object columns value by value), in row order."""
    values: list[str] = []
    with db.connect() as c:
        for spec in crypto.ENCRYPTED_COLUMNS:
            query = f"SELECT {spec.column} FROM {spec.table} WHERE {spec.column} IS NOT NULL ORDER BY {spec.key}"
            value: Any
            for value in c.execute(text(query)).scalars():
                values.extend(sorted(value.values()) if isinstance(value, dict) else [value])
    return values


@pytest.fixture()
def ring_settings(settings: Settings) -> Settings:
    """The test settings with SECRET_KEYS=new,old (what an operator sets to start a rotation)."""
    return Settings(
        DATABASE_URL=settings.database_url,
        API_TOKEN=TOKEN,
        SECRET_KEYS=f"{NEW}, {OLD}",
        ENVIRONMENT="test",
        SERVICETITAN_SANDBOX_URL="http://127.0.0.1:9",
        DAGSTER_WEBSERVER_URL="http://127.0.0.1:9",
    )


@pytest.fixture()
def ring_client(db: Engine, ring_settings: Settings) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(create_app(ring_settings, engine=db)) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c,
    ):
        yield c


def _si_rotate(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEYS")}
    environ.update(DATABASE_URL=database_url, API_TOKEN=TOKEN, ENVIRONMENT="test", COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "integration_core.cli", "secrets", "rotate", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tested(client: httpx.Client, company: str) -> str | None:
    """The error code of a connection test (the sandbox URL is a closed port: the credentials are decrypted first,
    then the provider cannot be reached)."""
    r = client.post(f"/api/admin/companies/{company}/connection/test")
    assert r.status_code == 200, r.text
    code: str | None = r.json()["error_code"]
    return code


def test_rotate_re_encrypts_every_credential_with_the_new_key(
    client: httpx.Client, ring_client: httpx.Client, db: Engine, database_url: str
) -> None:
    companies = _add_connections(client, 3)  # written with the old key
    before = _stored(db)
    assert all(crypto.decrypt(v, OLD) for v in before)

    # SECRET_KEYS=new,old: the old ciphertexts still decrypt
    assert _tested(ring_client, companies[0]) not in (None, "secret_key_mismatch")

    # batches of 2 rows over 3 rows: two transactions, every value rotated
    done = _si_rotate(database_url, "--batch-size", "2", SECRET_KEYS=f"{NEW},{OLD}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "9 value(s) re-encrypted with the first key" in done.stdout
    after = _stored(db)
    assert len(after) == 9 and set(after).isdisjoint(before)
    plain = [crypto.decrypt(v, NEW) for v in after]  # the new key alone decrypts everything
    assert sorted(plain) == sorted(crypto.decrypt(v, OLD) for v in before)
    for value in after:
        with pytest.raises(crypto.SecretDecryptionError):
            crypto.decrypt(value, OLD)

    # idempotent: nothing left to rotate
    again = _si_rotate(database_url, SECRET_KEYS=f"{NEW},{OLD}")
    assert again.returncode == 0 and "0 value(s) re-encrypted" in again.stdout
    assert _stored(db) == after

    # the old key can go: the service runs on the new key alone (and on the old key alone it no longer could)
    for key, expected_mismatch in ((NEW, False), (OLD, True)):
        app = create_app(Settings(DATABASE_URL=database_url, API_TOKEN=TOKEN, SECRET_KEY=key), engine=db)
        with serve_in_thread(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            assert (_tested(c, companies[2]) == "secret_key_mismatch") is expected_mismatch


def test_new_credentials_are_written_with_the_first_key(ring_client: httpx.Client, db: Engine) -> None:
    _add_connections(ring_client, 1)
    assert all(crypto.is_current(v, NEW) for v in _stored(db))
    assert {crypto.decrypt(v, NEW) for v in _stored(db)} == {"cid.client-0", "cs1.secret-0", "ak1.key-0"}


def test_a_value_no_key_decrypts_is_reported_and_left_alone(
    client: httpx.Client, db: Engine, database_url: str
) -> None:
    _add_connections(client, 2)
    lost = crypto.encrypt("cs1.lost", "a-key-nobody-has-any-more-0123456789")
    with db.begin() as c:
        row: uuid.UUID = c.execute(text("SELECT id FROM provider_connections ORDER BY id LIMIT 1")).scalar_one()
        c.execute(
            text(
                "UPDATE provider_connections SET secrets_encrypted = jsonb_set(secrets_encrypted, '{client_secret}', "
                "to_jsonb(CAST(:v AS text))) WHERE id = :id"
            ),
            {"v": lost, "id": row},
        )
    done = _si_rotate(database_url, SECRET_KEYS=f"{NEW},{OLD}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "5 value(s) re-encrypted" in done.stdout and f"row {row}" in done.stdout
    assert "cs1.lost" not in done.stdout + done.stderr
    with db.connect() as c:
        stored = c.execute(text("SELECT secrets_encrypted FROM provider_connections WHERE id = :id"), {"id": row})
        assert stored.scalar_one()["client_secret"] == lost


def test_json_object_columns_rotate_value_by_value(db: Engine) -> None:
    """The `json` kind (a JSON object of ciphertexts, e.g. a provider's secrets by field name)."""
    name = f"tmp_secrets_{uuid.uuid4().hex[:8]}"
    with db.begin() as c:
        c.execute(text(f"CREATE TABLE {name} (id bigint PRIMARY KEY, secrets jsonb)"))
        for i in range(5):
            secrets = {"api_key": crypto.encrypt(f"key-{i}", OLD), "other": crypto.encrypt(f"o-{i}", NEW)}
            c.execute(text(f"INSERT INTO {name} VALUES (:i, CAST(:s AS jsonb))"), {"i": i, "s": _json(secrets)})
        c.execute(text(f"INSERT INTO {name} VALUES (99, NULL)"))
    try:
        ring = crypto.KEY_SEPARATOR.join([NEW, OLD])
        spec = crypto.EncryptedColumn(name, "secrets", kind="json")
        [count] = crypto.rotate_all(db, ring, columns=[spec], batch_size=2)
        assert (count.rows, count.values, count.rotated, count.current, count.failed) == (5, 10, 5, 5, 0)
        with db.connect() as c:
            stored: list[tuple[int, dict[str, str]]] = [
                (r[0], r[1])
                for r in c.execute(text(f"SELECT id, secrets FROM {name} WHERE secrets IS NOT NULL ORDER BY id"))
            ]
        assert [crypto.decrypt(s["api_key"], NEW) for _, s in stored] == [f"key-{i}" for i in range(5)]
        assert [crypto.decrypt(s["other"], NEW) for _, s in stored] == [f"o-{i}" for i in range(5)]
        [count] = crypto.rotate_all(db, ring, columns=[spec])
        assert (count.rotated, count.current) == (0, 10)
    finally:
        with db.begin() as c:
            c.execute(text(f"DROP TABLE {name}"))


def _json(value: object) -> str:
    import json

    return json.dumps(value)


def test_every_encrypted_column_of_the_models_is_registered_for_rotation() -> None:
    registered = {(c.table, c.column) for c in crypto.ENCRYPTED_COLUMNS}
    declared = {
        (table.name, column.name)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if column.name.endswith("_encrypted")
    }
    assert declared == registered, "register new encrypted columns in integration_core.crypto.ENCRYPTED_COLUMNS"


def test_secret_keys_settings() -> None:
    ring = Settings(SECRET_KEYS=f" {NEW} ,{OLD},{NEW}", ENVIRONMENT="test")
    assert crypto.keys_of(ring.secret_key.get_secret_value()) == [NEW, OLD]  # trimmed, each once, order kept
    single = Settings(SECRET_KEY=OLD, ENVIRONMENT="test")
    assert crypto.keys_of(single.secret_key.get_secret_value()) == [OLD]
    with pytest.raises(ConfigurationError, match="not both"):
        Settings(SECRET_KEYS=NEW, SECRET_KEY=OLD, ENVIRONMENT="test")
    with pytest.raises(ConfigurationError, match="names no key"):
        Settings(SECRET_KEYS=" , ", ENVIRONMENT="test")
    with pytest.raises(ConfigurationError, match="at least 16"):
        Settings(SECRET_KEYS=f"{NEW},short", API_TOKEN="a-real-token-0123456789", ENVIRONMENT="production")
    with pytest.raises(ConfigurationError, match="placeholder"):
        Settings(SECRET_KEYS=f"{NEW},changeme", API_TOKEN="a-real-token-0123456789", ENVIRONMENT="production")
