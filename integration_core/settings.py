"""Service settings, read once from the environment and `.env` (never committed).

Names the troubleshooting guide uses keep their names (`DATABASE_URL`, `SERVICETITAN_*`). With no
`DATABASE_URL` the service runs on an embedded PostgreSQL under `DATA_DIR` (see `integration_core.db.embedded`).
"""

from __future__ import annotations

import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "changethis", "change-me", "secret", "dev-secret-key"})

# Development defaults: usable on a fresh machine, refused outside development.
DEV_API_TOKEN = "dev-api-token"
DEV_SECRET_KEY = "dev-secret-key"

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# what `/api/health/component/{name}` and `si health` check (integration_core.operations.health)
HEALTH_COMPONENTS = ("db", "providers", "dagster", "sandbox")


class ConfigurationError(RuntimeError):
    """A setting is missing or unsafe; the message names the variable to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    environment: Literal["development", "test", "staging", "production"] = Field("development", alias="ENVIRONMENT")
    database_url: str | None = Field(None, alias="DATABASE_URL")
    data_dir: Path = Field(PROJECT_ROOT / ".data", alias="DATA_DIR")
    embedded_db_name: str = Field("integration", alias="EMBEDDED_DB_NAME")

    # The PostgreSQL connection budget (docs/connections.md): every process has a small, bounded pool, and the
    # sum over all processes must stay under the server's max_connections (checked at start-up).
    db_pool_size: int = Field(3, ge=1, le=100, alias="DB_POOL_SIZE")  # per engine of the API, `si`, code server
    db_max_overflow: int = Field(3, ge=0, le=100, alias="DB_MAX_OVERFLOW")
    run_db_pool_size: int = Field(1, ge=1, le=64, alias="RUN_DB_POOL_SIZE")  # per delivery run worker (no overflow)
    db_pool_timeout_seconds: float = Field(30.0, gt=0, le=600, alias="DB_POOL_TIMEOUT_SECONDS")
    db_connection_reserve: int = Field(10, ge=0, le=1000, alias="DB_CONNECTION_RESERVE")  # psql, backups, migrations
    # transient database errors (connection refused, too many clients, admin shutdown, serialization failures)
    # are retried with backoff inside a run for this long before the run gives up cleanly
    db_retry_seconds: float = Field(30.0, ge=0, le=600, alias="DB_RETRY_SECONDS")
    # behind PgBouncer in transaction pooling: no server-side prepared statements (psycopg prepare_threshold=None)
    database_pgbouncer: bool = Field(False, alias="DATABASE_PGBOUNCER")

    api_token: SecretStr = Field(SecretStr(DEV_API_TOKEN), alias="API_TOKEN")
    secret_key: SecretStr = Field(SecretStr(DEV_SECRET_KEY), alias="SECRET_KEY")
    # Key rotation (docs/security.md): comma-separated, the newest first; new secrets are encrypted with the first,
    # every key decrypts. Set SECRET_KEYS or SECRET_KEY, not both. With SECRET_KEYS, `secret_key` holds the whole
    # ring (the keys joined by crypto.KEY_SEPARATOR): every caller hands it to crypto unchanged.
    secret_keys: SecretStr | None = Field(None, alias="SECRET_KEYS")

    # Defaults for a single-tenant setup; per-company connections live in the database.
    servicetitan_client_id: str | None = Field(None, alias="SERVICETITAN_CLIENT_ID")
    servicetitan_client_secret: SecretStr | None = Field(None, alias="SERVICETITAN_CLIENT_SECRET")
    servicetitan_tenant_id: str | None = Field(None, alias="SERVICETITAN_TENANT_ID")
    servicetitan_app_key: SecretStr | None = Field(None, alias="SERVICETITAN_APP_KEY")
    servicetitan_env: Literal["production", "integration", "sandbox"] = Field("sandbox", alias="SERVICETITAN_ENV")
    servicetitan_sandbox_url: str = Field("http://127.0.0.1:8100", alias="SERVICETITAN_SANDBOX_URL")
    # the local Housecall Pro sandbox (`python -m sandboxes.housecallpro`); `si run` starts it when this URL is on
    # loopback (127.0.0.1 / localhost), with the same office settings as the ServiceTitan sandbox
    housecallpro_sandbox_url: str = Field("http://127.0.0.1:8101", alias="HOUSECALLPRO_SANDBOX_URL")
    # `si connections add --provider housecallpro` reads the API key from here (environment or .env), else asks
    housecallpro_api_key: SecretStr | None = Field(None, alias="HOUSECALLPRO_API_KEY")
    # the sandbox's back office (accepts, converts, completes records on its own) in `si run`
    sandbox_office_enabled: bool = Field(True, alias="SANDBOX_OFFICE_ENABLED")
    sandbox_office_pace_seconds: float = Field(5.0, gt=0, alias="SANDBOX_OFFICE_PACE_SECONDS")

    # Matching
    routing_top_n: int = Field(1, ge=1, le=20, alias="ROUTING_TOP_N")

    # Delivery engine
    delivery_max_attempts: int = Field(8, ge=1, le=100, alias="DELIVERY_MAX_ATTEMPTS")
    delivery_backoff_base_seconds: float = Field(2.0, gt=0, alias="DELIVERY_BACKOFF_BASE_SECONDS")
    delivery_backoff_cap_seconds: float = Field(600.0, gt=0, alias="DELIVERY_BACKOFF_CAP_SECONDS")
    # the shortest lease (renewed by the run's heartbeat; at least 1.5 request timeouts over 0.73, see engine.py)
    delivery_lease_seconds: float = Field(60.0, ge=5, alias="DELIVERY_LEASE_SECONDS")
    delivery_concurrency: int = Field(32, ge=1, le=256, alias="DELIVERY_CONCURRENCY")
    delivery_batch_size: int = Field(200, ge=1, le=10_000, alias="DELIVERY_BATCH_SIZE")
    delivery_request_timeout_seconds: float = Field(20.0, gt=0, alias="DELIVERY_REQUEST_TIMEOUT_SECONDS")
    reconcile_delay_seconds: float = Field(2.0, ge=0, alias="RECONCILE_DELAY_SECONDS")
    # fraction of the provider's documented budget we use (room for clock skew and other clients)
    rate_limit_safety_margin: float = Field(0.92, gt=0, le=1, alias="RATE_LIMIT_SAFETY_MARGIN")
    # after a 429 the rate halves; it recovers by this fraction of the full rate per second
    rate_limit_recovery_per_second: float = Field(0.02, gt=0, le=1, alias="RATE_LIMIT_RECOVERY_PER_SECOND")

    # Dagster (pipelines/): when things run
    dagster_database_url: str | None = Field(None, alias="DAGSTER_DATABASE_URL")  # default: same server, db "dagster"
    dagster_webserver_port: int = Field(3000, alias="DAGSTER_WEBSERVER_PORT")
    # `warmfork`: run workers forked from a warm process in the daemon (pipelines/launcher.py); `default`:
    # Dagster's stock DefaultRunLauncher (a new Python process per run). Nothing else depends on the choice.
    dagster_run_launcher: Literal["warmfork", "default"] = Field("warmfork", alias="DAGSTER_RUN_LAUNCHER")
    # the Dagster instance directory (Dagster's own variable; the image's entrypoint writes dagster.yaml into it)
    dagster_home: Path | None = Field(None, alias="DAGSTER_HOME")
    # how many runs Dagster runs at once (dagster.yaml's concurrency.runs.max_concurrent_runs is written from it)
    dagster_max_concurrent_runs: int = Field(16, ge=1, le=1000, alias="DAGSTER_MAX_CONCURRENT_RUNS")
    dagster_code_server_port: int = Field(4000, alias="DAGSTER_CODE_SERVER_PORT")
    sensor_interval_seconds: int = Field(5, ge=1, le=3600, alias="SENSOR_INTERVAL_SECONDS")
    sensor_max_companies: int = Field(500, ge=1, le=10_000, alias="SENSOR_MAX_COMPANIES")
    run_time_budget_seconds: float = Field(300.0, ge=5, alias="RUN_TIME_BUDGET_SECONDS")
    # an idle delivery run waits this long for new work of its company (while no other run is queued)
    run_idle_seconds: float = Field(30.0, ge=0, alias="RUN_IDLE_SECONDS")
    run_poll_seconds: float = Field(1.0, gt=0, alias="RUN_POLL_SECONDS")
    reconcile_cron: str = Field("* * * * *", alias="RECONCILE_CRON")
    pull_updates_cron: str = Field("*/15 * * * *", alias="PULL_UPDATES_CRON")
    pull_concurrency: int = Field(4, ge=1, le=64, alias="PULL_CONCURRENCY")
    retention_cron: str = Field("17 3 * * *", alias="RETENTION_CRON")
    retention_days: int = Field(90, ge=1, alias="RETENTION_DAYS")
    checks_cron: str = Field("*/5 * * * *", alias="CHECKS_CRON")
    failure_rate_threshold: float = Field(0.2, ge=0, le=1, alias="FAILURE_RATE_THRESHOLD")
    delivery_target_seconds: float = Field(300.0, gt=0, alias="DELIVERY_TARGET_SECONDS")
    alert_webhook_url: str | None = Field(None, alias="ALERT_WEBHOOK_URL")
    # daily reports (integration_core/reports, docs/reports.md): days are calendar days in REPORTING_TIMEZONE
    reporting_timezone: str = Field("America/Los_Angeles", alias="REPORTING_TIMEZONE")
    reports_start_date: date = Field(date(2026, 1, 1), alias="REPORTS_START_DATE")  # the first daily partition
    delivery_sla_seconds: float = Field(300.0, gt=0, alias="DELIVERY_SLA_SECONDS")  # a company's p95 routed→synced
    sla_error_factor: float = Field(2.0, ge=1, alias="SLA_ERROR_FACTOR")  # WARN over a threshold, ERROR over x it

    # Provider webhooks (docs/webhooks.md): inbound /webhooks/*, stored then applied by the webhook sensor
    webhook_max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024, alias="WEBHOOK_MAX_BODY_BYTES")  # larger: 413
    webhook_generic_secret: SecretStr | None = Field(None, alias="WEBHOOK_GENERIC_SECRET")  # /webhooks/generic
    webhook_apply_interval_seconds: int = Field(5, ge=1, le=3600, alias="WEBHOOK_APPLY_INTERVAL_SECONDS")
    webhook_apply_batch_size: int = Field(500, ge=1, le=10_000, alias="WEBHOOK_APPLY_BATCH_SIZE")
    webhook_max_apply_attempts: int = Field(5, ge=1, le=100, alias="WEBHOOK_MAX_APPLY_ATTEMPTS")
    # the API applies what it stored right after acknowledging (seconds, not the sensor's tick); the sensor
    # applies whatever that misses
    webhook_apply_in_api: bool = Field(True, alias="WEBHOOK_APPLY_IN_API")
    # the asset check fails when an unapplied event is older than this
    webhook_unapplied_max_age_seconds: float = Field(120.0, gt=0, alias="WEBHOOK_UNAPPLIED_MAX_AGE_SECONDS")

    # HTTP API
    api_host: str = Field("127.0.0.1", alias="API_HOST")
    api_port: int = Field(8000, alias="API_PORT")
    api_page_size_max: int = Field(500, alias="API_PAGE_SIZE_MAX")
    # the largest request body the API reads (larger: 413 before parsing or auth; docs/security.md)
    api_max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024**3, alias="API_MAX_BODY_BYTES")

    # Operator surface: health checks and the Dagster webserver's GraphQL API (operations/dagster_client.py)
    # default: the local stack's webserver, http://127.0.0.1:$DAGSTER_WEBSERVER_PORT
    dagster_webserver_url: str | None = Field(None, alias="DAGSTER_WEBSERVER_URL")
    dagster_timeout_seconds: float = Field(3.0, gt=0, le=60, alias="DAGSTER_TIMEOUT_SECONDS")
    # components whose failure makes /api/health answer 503 and `si health` exit 3: db, providers, dagster, sandbox
    health_required_components: str = Field("db", alias="HEALTH_REQUIRED_COMPONENTS")
    # a provider connection is checked (token + one cheap read) at most once per this many seconds
    health_cache_seconds: float = Field(60.0, ge=0, le=86_400, alias="HEALTH_CACHE_SECONDS")
    health_check_timeout_seconds: float = Field(10.0, gt=0, le=120, alias="HEALTH_CHECK_TIMEOUT_SECONDS")
    # the public (no token) health answers are cached this long per API process
    health_public_cache_seconds: float = Field(5.0, ge=0, le=3600, alias="HEALTH_PUBLIC_CACHE_SECONDS")

    log_level: str = Field("INFO", alias="LOG_LEVEL")

    @field_validator("reporting_timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"REPORTING_TIMEZONE: unknown time zone {v!r} (an IANA name, e.g. America/Los_Angeles)"
            ) from None
        return v

    @field_validator("health_required_components")
    @classmethod
    def _known_components(cls, v: str) -> str:
        names = [n.strip().lower() for n in v.split(",") if n.strip()]
        names = ["db" if n == "database" else n for n in names]
        unknown = sorted(set(names) - set(HEALTH_COMPONENTS))
        if unknown:
            raise ValueError(
                f"HEALTH_REQUIRED_COMPONENTS: unknown component(s) {', '.join(unknown)}; "
                f"choose from {', '.join(HEALTH_COMPONENTS)}"
            )
        return ",".join(dict.fromkeys(names))

    @property
    def dagster_url(self) -> str:
        """Where the Dagster webserver (and its GraphQL API at /graphql) answers."""
        return (self.dagster_webserver_url or f"http://127.0.0.1:{self.dagster_webserver_port}").rstrip("/")

    @property
    def required_components(self) -> frozenset[str]:
        return frozenset(n for n in self.health_required_components.split(",") if n)

    @model_validator(mode="after")
    def _enforce_secrets(self) -> Settings:
        from integration_core.crypto import KEY_SEPARATOR

        key_var = "SECRET_KEY"
        if self.secret_keys is not None:
            key_var = "SECRET_KEYS"
            if "secret_key" in self.model_fields_set:
                raise ConfigurationError("set SECRET_KEYS (key rotation) or SECRET_KEY, not both")
            keys = [k.strip() for k in self.secret_keys.get_secret_value().split(",") if k.strip()]
            if not keys:
                raise ConfigurationError("SECRET_KEYS names no key; list the keys comma-separated, the newest first")
            if any(KEY_SEPARATOR in k for k in keys):
                raise ConfigurationError("SECRET_KEYS: a key must not contain a line break")
            self.secret_key = SecretStr(KEY_SEPARATOR.join(dict.fromkeys(keys)))
            self.secret_keys = None  # consumed: a copy re-validated later must not see both
        if self.environment in ("development", "test"):
            return self
        for var, value in (("API_TOKEN", self.api_token), (key_var, self.secret_key)):
            for raw in value.get_secret_value().split(KEY_SEPARATOR):
                if raw.strip().lower() in PLACEHOLDER_SECRETS or raw in (DEV_API_TOKEN, DEV_SECRET_KEY):
                    raise ConfigurationError(
                        f"{var} is missing or a placeholder; set {var} in the environment or .env "
                        + ("(or SECRET_KEYS=<new>,<old> during a key rotation) " if var == "SECRET_KEY" else "")
                        + f"(ENVIRONMENT={self.environment} refuses development defaults)"
                    )
                if var != "API_TOKEN" and len(raw) < 16:
                    raise ConfigurationError(f"{var}: every key must be at least 16 characters long")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def set_in_environment(name: str) -> bool:
    """Whether the process environment itself sets `name` (not `.env`): Dagster's `EnvVar` resolves from the
    environment only, so the code location hands a secret over as an EnvVar only when this is true."""
    return bool(os.environ.get(name))
