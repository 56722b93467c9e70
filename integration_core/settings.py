"""Service settings, read once from the environment and `.env` (never committed).

Names the troubleshooting guide uses keep their names (`DATABASE_URL`, `SERVICETITAN_*`). With no
`DATABASE_URL` the service runs on an embedded PostgreSQL under `DATA_DIR` (see `integration_core.db.embedded`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "changethis", "change-me", "secret", "dev-secret-key"})

# Development defaults: usable on a fresh machine, refused outside development.
DEV_API_TOKEN = "dev-api-token"
DEV_SECRET_KEY = "dev-secret-key"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigurationError(RuntimeError):
    """A setting is missing or unsafe; the message names the variable to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    environment: Literal["development", "test", "staging", "production"] = Field("development", alias="ENVIRONMENT")
    database_url: str | None = Field(None, alias="DATABASE_URL")
    data_dir: Path = Field(PROJECT_ROOT / ".data", alias="DATA_DIR")
    embedded_db_name: str = Field("integration", alias="EMBEDDED_DB_NAME")

    api_token: SecretStr = Field(SecretStr(DEV_API_TOKEN), alias="API_TOKEN")
    secret_key: SecretStr = Field(SecretStr(DEV_SECRET_KEY), alias="SECRET_KEY")

    # Defaults for a single-tenant setup; per-company connections live in the database.
    servicetitan_client_id: str | None = Field(None, alias="SERVICETITAN_CLIENT_ID")
    servicetitan_client_secret: SecretStr | None = Field(None, alias="SERVICETITAN_CLIENT_SECRET")
    servicetitan_tenant_id: str | None = Field(None, alias="SERVICETITAN_TENANT_ID")
    servicetitan_app_key: SecretStr | None = Field(None, alias="SERVICETITAN_APP_KEY")
    servicetitan_env: Literal["production", "integration", "sandbox"] = Field("sandbox", alias="SERVICETITAN_ENV")
    servicetitan_sandbox_url: str = Field("http://127.0.0.1:8100", alias="SERVICETITAN_SANDBOX_URL")

    # Matching
    routing_top_n: int = Field(1, ge=1, le=20, alias="ROUTING_TOP_N")

    # Delivery engine
    delivery_max_attempts: int = Field(8, ge=1, le=100, alias="DELIVERY_MAX_ATTEMPTS")
    delivery_backoff_base_seconds: float = Field(2.0, gt=0, alias="DELIVERY_BACKOFF_BASE_SECONDS")
    delivery_backoff_cap_seconds: float = Field(600.0, gt=0, alias="DELIVERY_BACKOFF_CAP_SECONDS")
    delivery_lease_seconds: float = Field(120.0, ge=5, alias="DELIVERY_LEASE_SECONDS")
    delivery_concurrency: int = Field(32, ge=1, le=256, alias="DELIVERY_CONCURRENCY")
    delivery_batch_size: int = Field(200, ge=1, le=10_000, alias="DELIVERY_BATCH_SIZE")
    delivery_request_timeout_seconds: float = Field(20.0, gt=0, alias="DELIVERY_REQUEST_TIMEOUT_SECONDS")
    reconcile_delay_seconds: float = Field(2.0, ge=0, alias="RECONCILE_DELAY_SECONDS")
    # fraction of the provider's documented budget we use (room for clock skew and other clients)
    rate_limit_safety_margin: float = Field(0.92, gt=0, le=1, alias="RATE_LIMIT_SAFETY_MARGIN")
    # after a 429 the rate halves; it recovers by this fraction of the full rate per second
    rate_limit_recovery_per_second: float = Field(0.02, gt=0, le=1, alias="RATE_LIMIT_RECOVERY_PER_SECOND")

    # HTTP API
    api_host: str = Field("127.0.0.1", alias="API_HOST")
    api_port: int = Field(8000, alias="API_PORT")
    api_page_size_max: int = Field(500, alias="API_PAGE_SIZE_MAX")

    log_level: str = Field("INFO", alias="LOG_LEVEL")

    @model_validator(mode="after")
    def _enforce_secrets(self) -> Settings:
        if self.environment in ("development", "test"):
            return self
        for var, value in (("API_TOKEN", self.api_token), ("SECRET_KEY", self.secret_key)):
            raw = value.get_secret_value()
            if raw.strip().lower() in PLACEHOLDER_SECRETS or raw in (DEV_API_TOKEN, DEV_SECRET_KEY):
                raise ConfigurationError(
                    f"{var} is missing or a placeholder; set {var} in the environment or .env "
                    f"(ENVIRONMENT={self.environment} refuses development defaults)"
                )
            if var == "SECRET_KEY" and len(raw) < 16:
                raise ConfigurationError("SECRET_KEY must be at least 16 characters long")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
