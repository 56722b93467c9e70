from __future__ import annotations

from typing import Any

import pytest

from integration_core.settings import ConfigurationError, Settings


def test_development_defaults_work_on_a_fresh_machine() -> None:
    s = Settings(ENVIRONMENT="development")
    assert s.api_token.get_secret_value()


@pytest.mark.parametrize("env", ["staging", "production"])
@pytest.mark.parametrize(
    ("var", "value"), [("API_TOKEN", "changeme"), ("SECRET_KEY", "dev-secret-key"), ("SECRET_KEY", "short")]
)
def test_placeholder_secrets_are_refused_outside_development(env: str, var: str, value: str) -> None:
    good: dict[str, Any] = {"API_TOKEN": "a-real-token-value-123", "SECRET_KEY": "a-real-secret-key-1234567890"}
    good[var] = value
    with pytest.raises((ConfigurationError, ValueError)) as info:
        Settings(ENVIRONMENT=env, **good)
    assert var in str(info.value)


def test_missing_secret_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    with pytest.raises((ConfigurationError, ValueError)) as info:
        Settings(ENVIRONMENT="production", SECRET_KEY="a-real-secret-key-1234567890")
    assert "API_TOKEN" in str(info.value)


def test_compose_passes_both_key_variables_and_an_empty_one_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose.yml passes `SECRET_KEY: ${SECRET_KEY:-}` and `SECRET_KEYS: ${SECRET_KEYS:-}`: a rotation is
    a change of .env only, and with neither a production service refuses to start, naming both."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_TOKEN", "a-real-token-value-123")
    monkeypatch.setenv("SECRET_KEY", "")
    monkeypatch.setenv("SECRET_KEYS", "")
    with pytest.raises((ConfigurationError, ValueError)) as info:
        Settings()
    assert "SECRET_KEY is missing" in str(info.value) and "SECRET_KEYS" in str(info.value)
    monkeypatch.setenv("SECRET_KEYS", "the-new-key-0123456789,the-old-key-0123456789")
    ring = Settings().secret_key.get_secret_value()
    assert "the-new-key-0123456789" in ring and "the-old-key-0123456789" in ring
    monkeypatch.setenv("SECRET_KEYS", "")
    monkeypatch.setenv("SECRET_KEY", "a-real-secret-key-1234567890")
    assert Settings().secret_key.get_secret_value() == "a-real-secret-key-1234567890"
