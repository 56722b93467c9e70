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
