"""Encryption at rest for provider credentials (Fernet, key derived from SECRET_KEY).

Ciphertexts are versioned (`v1:`) so the key derivation can change without guessing. Plaintexts never leave
this module except through `decrypt`, and the `Secret` wrapper keeps them out of reprs and logs.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

_PREFIX = "v1:"


class SecretDecryptionError(RuntimeError):
    """A stored secret cannot be decrypted with the current SECRET_KEY (was the key changed?)."""


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"service-integration/provider-credentials/v1\x00" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str, secret_key: str) -> str:
    return _PREFIX + _fernet(secret_key).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str, secret_key: str) -> str:
    if not ciphertext.startswith(_PREFIX):
        raise SecretDecryptionError("stored secret has an unknown format")
    try:
        return _fernet(secret_key).decrypt(ciphertext[len(_PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "stored secret cannot be decrypted with the current SECRET_KEY; "
            "restore the key it was written with, or re-enter the connection's credentials"
        ) from exc


def mask(value: str | None) -> str | None:
    """What an operator may see of a secret: its kind prefix and last 4 characters."""
    if not value:
        return value
    prefix = value.split(".", 1)[0] + "." if "." in value[:5] else ""
    return f"{prefix}…{value[-4:]}" if len(value) > 8 else "…"
