"""The API token is printed by `si run` / `si up` (whose output lands in .data/logs/stack.log) only in
development; elsewhere they point at the setting."""

from __future__ import annotations

import pytest

from integration_core.cli.main import shown_token
from integration_core.settings import Settings

TOKEN = "a-real-token-0123456789abcdef"
KEY = "a-real-secret-key-0123456789abcdef"


def test_development_prints_the_token() -> None:
    assert shown_token(Settings(ENVIRONMENT="development", API_TOKEN=TOKEN)) == TOKEN


@pytest.mark.parametrize("environment", ["test", "staging", "production"])
def test_other_environments_never_print_it(environment: str) -> None:
    shown = shown_token(Settings(ENVIRONMENT=environment, API_TOKEN=TOKEN, SECRET_KEY=KEY))
    assert TOKEN not in shown and shown == "$API_TOKEN"
