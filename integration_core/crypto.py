"""Encryption at rest for provider credentials and other stored secrets (Fernet, keys derived from the secret keys).

Keys: `SECRET_KEYS` (comma-separated, the newest first) or a single `SECRET_KEY`. Settings hand them on as one
string, the keys joined by `KEY_SEPARATOR` (`Settings.secret_key`), so every caller keeps passing one value.
New ciphertexts are written with the first key; any of the keys decrypts (`cryptography`'s `MultiFernet`).
`si secrets rotate` (`rotate_all`) re-encrypts every stored secret listed in `ENCRYPTED_COLUMNS` with the first
key, after which the old keys can be dropped (docs/security.md).

Ciphertexts are versioned (`v1:`) so the key derivation can change without guessing. Plaintexts never leave this
module except through `decrypt`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Literal, cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Engine, column, select, table, update
from sqlalchemy.dialects.postgresql import JSONB

_PREFIX = "v1:"
# between the keys of a key ring in the one string settings hand on (a key never holds a line break)
KEY_SEPARATOR = "\n"


class SecretDecryptionError(RuntimeError):
    """A stored secret cannot be decrypted with any of the current keys (was the key changed?)."""


def keys_of(secret_key: str) -> list[str]:
    """The keys in a key ring string, newest first (a plain SECRET_KEY is a ring of one)."""
    keys = [k for k in secret_key.split(KEY_SEPARATOR) if k]
    if not keys:
        raise ValueError("no secret key")
    return keys


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"service-integration/provider-credentials/v1\x00" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _ring(secret_key: str) -> MultiFernet:
    return MultiFernet([_fernet(k) for k in keys_of(secret_key)])


def _token(ciphertext: str) -> bytes:
    if not ciphertext.startswith(_PREFIX):
        raise SecretDecryptionError("stored secret has an unknown format")
    return ciphertext[len(_PREFIX) :].encode()


def encrypt(plaintext: str, secret_key: str) -> str:
    """Encrypt with the newest key."""
    return _PREFIX + _ring(secret_key).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str, secret_key: str) -> str:
    """Decrypt with whichever key of the ring wrote it."""
    try:
        return _ring(secret_key).decrypt(_token(ciphertext)).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "stored secret cannot be decrypted with the current SECRET_KEY/SECRET_KEYS; "
            "restore the key it was written with, or re-enter the connection's credentials"
        ) from exc


def is_current(ciphertext: str, secret_key: str) -> bool:
    """Whether the newest key already decrypts it (nothing to rotate)."""
    try:
        _fernet(keys_of(secret_key)[0]).decrypt(_token(ciphertext))
    except InvalidToken:
        return False
    return True


def rotate(ciphertext: str, secret_key: str) -> str:
    """The same secret, re-encrypted with the newest key (raises SecretDecryptionError if no key opens it)."""
    try:
        return _PREFIX + _ring(secret_key).rotate(_token(ciphertext)).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError("stored secret cannot be decrypted with any of the current keys") from exc


def mask(value: str | None) -> str | None:
    """What an operator may see of a secret: its kind prefix and last 4 characters."""
    if not value:
        return value
    prefix = value.split(".", 1)[0] + "." if "." in value[:5] else ""
    return f"{prefix}…{value[-4:]}" if len(value) > 8 else "…"


# --------------------------------------------------------------------------------------------------------------
# Every stored secret, for `si secrets rotate`
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding ciphertexts of this module: `text` = one ciphertext (or NULL); `json` = a JSON object
    whose values are ciphertexts. `key` is the table's primary key column (one column, orderable)."""

    table: str
    column: str
    kind: Literal["text", "json"] = "text"
    key: str = "id"


# REGISTER EVERY NEW ENCRYPTED COLUMN HERE (and remove one a migration drops): `si secrets rotate` re-encrypts
# exactly these, so a column missing from this list keeps its old key and stops decrypting once that key is
# dropped from SECRET_KEYS. tests/api/test_key_rotation.py checks that every `*_encrypted` column of the ORM
# models is listed.
ENCRYPTED_COLUMNS: list[EncryptedColumn] = [
    # issue 11 (migration 0003): every provider's secrets, one ciphertext per secret field
    EncryptedColumn("provider_connections", "secrets_encrypted", kind="json"),
    EncryptedColumn("webhook_endpoints", "secret_encrypted", key="connection_id"),  # issue 12
]


@dataclass
class RotationCount:
    table: str
    column: str
    rows: int = 0  # rows with a value
    values: int = 0  # ciphertexts in them (a JSON-object column holds several per row)
    rotated: int = 0  # ciphertexts re-encrypted with the newest key
    current: int = 0  # ciphertexts already under the newest key
    failed: int = 0  # ciphertexts no key decrypts (left as they are)
    failed_keys: list[str] = field(default_factory=list)  # the row keys holding them (no secret)


def _rotate_value(
    value: str | dict[str, str], secret_key: str, count: RotationCount
) -> tuple[str | dict[str, str], bool, bool]:
    """(new value, changed, failed) for one column value; counts each ciphertext."""
    items = value.items() if isinstance(value, dict) else [("", value)]
    out: dict[str, str] = {}
    changed = failed = False
    for name, ciphertext in items:
        out[name] = ciphertext
        if not isinstance(ciphertext, str):
            continue
        count.values += 1
        if is_current(ciphertext, secret_key):
            count.current += 1
            continue
        try:
            out[name] = rotate(ciphertext, secret_key)
        except SecretDecryptionError:
            count.failed += 1
            failed = True
        else:
            count.rotated += 1
            changed = True
    return (out if isinstance(value, dict) else out[""]), changed, failed


def rotate_all(
    engine: Engine,
    secret_key: str,
    *,
    columns: list[EncryptedColumn] | None = None,
    batch_size: int = 500,
) -> list[RotationCount]:
    """Re-encrypt every registered secret with the newest key, one transaction per batch of rows. Idempotent: a
    value the newest key already opens is left alone, so a second run rotates nothing. A value no key opens is
    counted as failed and left as it is (its row key is reported). Each batch's rows are locked (FOR UPDATE) while
    they are rewritten, so a concurrent credential change waits rather than being overwritten."""
    counts: list[RotationCount] = []
    for spec in columns if columns is not None else ENCRYPTED_COLUMNS:
        count = RotationCount(spec.table, spec.column)
        value_col = column(spec.column, JSONB) if spec.kind == "json" else column(spec.column)
        t = table(spec.table, column(spec.key), value_col)
        key_col = t.c[spec.key]
        last = None
        while True:
            with engine.begin() as conn:
                query = select(key_col, t.c[spec.column]).where(t.c[spec.column].is_not(None))
                if last is not None:
                    query = query.where(key_col > last)
                rows = conn.execute(query.order_by(key_col).limit(batch_size).with_for_update()).all()
                for row_key, value in rows:
                    count.rows += 1
                    stored = cast("str | dict[str, str]", value)  # the column's kind: text or a JSON object
                    new, changed, failed = _rotate_value(stored, secret_key, count)
                    if failed:
                        count.failed_keys.append(str(row_key))
                    if changed:
                        conn.execute(update(t).where(key_col == row_key).values({spec.column: new}))
            if len(rows) < batch_size:
                break
            last = rows[-1][0]
        counts.append(count)
    return counts
