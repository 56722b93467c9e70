"""Paths, credentials and settings every test area uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from integration_core.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"

TEST_API_TOKEN = "test-api-token-0123456789"
TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"
DEAD_URL = "http://127.0.0.1:9"  # discard port: connection refused at once


def base_settings(database_url: str) -> Settings:
    """The settings of the `settings` fixture: test database, token and key; no real sandbox or Dagster."""
    return Settings(
        DATABASE_URL=database_url,
        API_TOKEN=TEST_API_TOKEN,
        SECRET_KEY=TEST_SECRET_KEY,
        ENVIRONMENT="test",
        SERVICETITAN_SANDBOX_URL=DEAD_URL,
        DAGSTER_WEBSERVER_URL=DEAD_URL,  # never a stack that happens to run on this machine
    )


def engine_settings(database_url: str) -> Settings:
    """Short timers so faults resolve within a test; everything else as in production."""
    return Settings(
        DATABASE_URL=database_url,
        API_TOKEN=TEST_API_TOKEN,
        SECRET_KEY=TEST_SECRET_KEY,
        ENVIRONMENT="test",
        DELIVERY_BACKOFF_BASE_SECONDS=0.05,
        DELIVERY_BACKOFF_CAP_SECONDS=0.3,
        DELIVERY_REQUEST_TIMEOUT_SECONDS=1.0,
        DELIVERY_LEASE_SECONDS=5,
        RECONCILE_DELAY_SECONDS=0,
        DELIVERY_MAX_ATTEMPTS=8,
    )


def with_settings(settings: Settings, **updates: Any) -> Settings:
    """A copy of the test settings with some values replaced (field names, not env aliases)."""
    return settings.model_copy(update=updates)


def clear_caches() -> None:
    """Forget cached settings and database URL (after the environment changed)."""
    from integration_core.db import engine as engine_mod

    get_settings.cache_clear()
    engine_mod.database_url.cache_clear()
