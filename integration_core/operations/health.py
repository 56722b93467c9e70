"""Health of every component the service depends on, shared by `GET /api/health…` and `si health`.

Components (`HEALTH_COMPONENTS`):

- `db`: a round trip to PostgreSQL.
- `providers`: every enabled provider connection proves its credentials and settings (`check_connection()`: a
  token fetch and one cheap read, through the tenant's shared rate budget). A connection is checked at most once
  per `HEALTH_CACHE_SECONDS`, whatever process asks: the check is claimed by moving
  `provider_connections.health_checked_at` forward in one UPDATE, and the outcome is written to
  `health` / `health_checked_at` (and `last_error` when it failed). Health never hammers ServiceTitan. The
  `delivery_checks` schedule asks too (asset check `provider_connections_healthy`), so what public health reads
  from the stored verdicts is at most a schedule interval old.
- `dagster`: the daemon's heartbeats and the run queue, through the webserver's GraphQL API.
- `sandbox`: the local ServiceTitan sandbox's `/_sandbox/health`, only when `SERVICETITAN_ENV=sandbox`.

A component is `up`, `degraded` (working, with a problem worth a look), `down` or `disabled` (not applicable).
The overall answer is `unhealthy` when a *required* component (`HEALTH_REQUIRED_COMPONENTS`, default `db`) is
down, `degraded` when anything else is not up, else `healthy`. Details never carry secrets: connection
errors are the provider boundary's redacted messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from integration_core.db.engine import connect_args
from integration_core.operations.dagster_client import DagsterClient, DagsterUnavailable
from integration_core.settings import HEALTH_COMPONENTS, Settings

log = logging.getLogger(__name__)

Status = Literal["up", "degraded", "down", "disabled"]
Overall = Literal["healthy", "degraded", "unhealthy"]


class ConnectionCheck(BaseModel):
    """The outcome of one connection check (or of the cached one)."""

    connection_id: uuid.UUID
    company_id: uuid.UUID
    provider: str
    environment: str
    account_id: str  # the provider account (ServiceTitan tenant id)
    delivery_mode: str
    health: str  # healthy | unhealthy | unknown
    checked_at: datetime | None
    cached: bool
    error_code: str | None = None
    error: str | None = None
    # the provider could not be reached or asked us to wait (`si connections test` exits 3, not 1)
    unavailable: bool = Field(False, exclude=True)

    @property
    def ok(self) -> bool:
        return self.health == "healthy" and self.error_code is None


class DaemonOut(BaseModel):
    daemon: str
    required: bool
    healthy: bool | None
    last_heartbeat_at: datetime | None
    heartbeat_age_seconds: float | None


class RunQueueOut(BaseModel):
    queued: int
    in_progress: int


class ComponentReport(BaseModel):
    """One component: `status`, whether it is `required`, and what the check found (only the fields that apply
    to the component are set; serialised with `exclude_none`). This is the detailed, token-protected view;
    the public one (`ComponentStatus`) carries the status alone."""

    component: str
    status: Status
    required: bool
    error: str | None = None
    message: str | None = None
    # db
    latency_ms: float | None = None
    # providers
    enabled_connections: int | None = None
    healthy: int | None = None
    cache_seconds: float | None = None
    connections: list[ConnectionCheck] | None = None
    # dagster
    webserver: str | None = None
    daemons: list[DaemonOut] | None = None
    run_queue: RunQueueOut | None = None
    # sandbox
    url: str | None = None
    definitions_loaded: bool | None = None
    tenants: int | None = None

    @property
    def name(self) -> str:
        return self.component

    @property
    def ok(self) -> bool:
        return self.status != "down"

    @property
    def detail(self) -> dict[str, Any]:
        """What the check found, without the component's name, status and required flag (as JSON)."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"component", "status", "required"})


def _overall(components: dict[str, Any]) -> Overall:
    if any(c.required and c.status == "down" for c in components.values()):
        return "unhealthy"
    if any(c.status not in ("up", "disabled") for c in components.values()):
        return "degraded"
    return "healthy"


class HealthReport(BaseModel):
    """Every component checked (or the one asked for): `unhealthy` when a required one is down."""

    status: Overall
    required: list[str]
    components: dict[str, ComponentReport]

    @classmethod
    def of(cls, components: dict[str, ComponentReport]) -> HealthReport:
        return cls(
            status=_overall(components),
            required=sorted(c.component for c in components.values() if c.required),
            components=components,
        )

    @property
    def required_down(self) -> list[str]:
        return [c.component for c in self.components.values() if c.required and c.status == "down"]


class ComponentStatus(BaseModel):
    """Public health of one component: its status, nothing else."""

    status: Status


class PublicHealth(BaseModel):
    """Public health: the overall status and each component's status — no ids, URLs, errors or counts."""

    status: Overall
    components: dict[str, ComponentStatus]


class PublicComponentHealth(ComponentStatus):
    component: str


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------------------------
# db
# --------------------------------------------------------------------------------------------------------------


def check_db(engine: Engine, settings: Settings) -> ComponentReport:
    required = "db" in settings.required_components
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        error = f"database unreachable ({type(exc).__name__})"
        return ComponentReport(component="db", status="down", required=required, error=error)
    latency = round((time.perf_counter() - started) * 1000, 1)
    return ComponentReport(component="db", status="up", required=required, latency_ms=latency)


# --------------------------------------------------------------------------------------------------------------
# providers
# --------------------------------------------------------------------------------------------------------------

_ENABLED_CONNECTIONS = text(
    """
    SELECT id, company_id, provider, environment, account_id, delivery_mode, health, health_checked_at, last_error
      FROM provider_connections
     WHERE enabled
     ORDER BY company_id, provider
    """
)

# claim the check: only one caller per connection per TTL gets a row back
_CLAIM_CHECK = text(
    """
    UPDATE provider_connections
       SET health_checked_at = now()
     WHERE id = :id
       AND (:force OR health_checked_at IS NULL OR health_checked_at < now() - make_interval(secs => :ttl))
    RETURNING id
    """
)

_WRITE_CHECK = text(
    """
    UPDATE provider_connections
       SET health = coalesce(:health, health), health_checked_at = now(),
           last_error = coalesce(:error, last_error)
     WHERE id = :id
    RETURNING health_checked_at
    """
)


@dataclass(frozen=True)
class _Outcome:
    health: str | None  # to store; None keeps the stored value (throttled: no verdict)
    code: str | None = None
    message: str | None = None
    unavailable: bool = False  # the provider could not be reached or asked us to wait


CHECK_CONCURRENCY = 8
HEALTH_POOL_SIZE = 2


async def _check_one(engine: AsyncEngine, row: Any, settings: Settings) -> _Outcome:
    from integration_core import crypto
    from integration_core.delivery.connections import open_connection
    from integration_core.providers.base import AuthFailed, Permanent, ProviderError, RateLimited

    live = None
    try:
        live = open_connection(engine, row, settings)
        await asyncio.wait_for(live.provider.check_connection(), timeout=settings.health_check_timeout_seconds)
    except crypto.SecretDecryptionError as exc:
        return _Outcome("unhealthy", "secret_key_mismatch", str(exc))
    except TimeoutError:
        timeout = settings.health_check_timeout_seconds
        return _Outcome("unhealthy", "timeout", f"no answer from the provider within {timeout:g}s", True)
    except RateLimited as exc:
        return _Outcome(None, exc.code, f"throttled by the provider; retry after {exc.retry_after:g}s", True)
    except (AuthFailed, Permanent) as exc:
        detail = ""
        if isinstance(exc, Permanent) and exc.field_errors:
            detail = " (" + "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.field_errors.items()) + ")"
        return _Outcome("unhealthy", exc.code, f"{exc.message}{detail}"[:500])
    except ProviderError as exc:  # Retryable / UnknownOutcome: ServiceTitan unreachable or failing
        return _Outcome("unhealthy", exc.code, exc.message[:500], True)
    except NotImplementedError as exc:  # a registered provider whose client is not available in this build
        return _Outcome("unhealthy", "provider_unavailable", str(exc)[:500])
    except (ValueError, SQLAlchemyError) as exc:
        # a half-configured connection (e.g. sandbox without base_url) or the database went away mid-check
        return _Outcome("unhealthy", "check_failed", f"connection check failed ({type(exc).__name__})")
    finally:
        if live is not None:
            await live.aclose()
    return _Outcome("healthy")


def _run_checks(engine: Engine, settings: Settings, rows: list[Any]) -> dict[uuid.UUID, _Outcome]:
    """Check connections concurrently (at most CHECK_CONCURRENCY at once), over one small async pool."""
    async_url = engine.url.render_as_string(hide_password=False)

    async def main() -> list[_Outcome]:
        # two connections for all checks (each holds one only for a statement): part of the API's budget
        async_engine = create_async_engine(
            async_url, pool_size=HEALTH_POOL_SIZE, max_overflow=0, connect_args=connect_args(settings)
        )
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def one(row: Any) -> _Outcome:
            async with gate:
                return await _check_one(async_engine, row, settings)

        try:
            return list(await asyncio.gather(*(one(r) for r in rows)))
        finally:
            await async_engine.dispose()

    outcomes = asyncio.run(main())
    return {r.id: o for r, o in zip(rows, outcomes, strict=True)}


def _connection_rows(engine: Engine, ids: list[uuid.UUID]) -> list[Any]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from integration_core.db.models import ProviderConnection

    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(ProviderConnection).where(ProviderConnection.id.in_(ids))).all())


def check_connections(
    engine: Engine,
    settings: Settings,
    *,
    connection_ids: list[uuid.UUID] | None = None,
    force: bool = False,
) -> list[ConnectionCheck]:
    """Check enabled connections (or exactly `connection_ids`, enabled or not), honouring the cache unless
    `force`. Results are written back to `provider_connections`."""
    with engine.begin() as conn:
        if connection_ids is None:
            listed = conn.execute(_ENABLED_CONNECTIONS).mappings().all()
        else:
            listed = (
                conn.execute(
                    text(
                        "SELECT id, company_id, provider, environment, account_id, delivery_mode, health, "
                        "health_checked_at, last_error FROM provider_connections WHERE id = ANY(:ids)"
                    ),
                    {"ids": connection_ids},
                )
                .mappings()
                .all()
            )
    claimed: list[uuid.UUID] = []
    for row in listed:
        with engine.begin() as conn:
            got = conn.execute(
                _CLAIM_CHECK, {"id": row["id"], "force": force, "ttl": settings.health_cache_seconds}
            ).first()
        if got is not None:
            claimed.append(row["id"])
    outcomes = _run_checks(engine, settings, _connection_rows(engine, claimed)) if claimed else {}
    results: list[ConnectionCheck] = []
    for row in listed:
        check = ConnectionCheck(
            connection_id=row["id"],
            company_id=row["company_id"],
            provider=row["provider"],
            environment=row["environment"],
            account_id=row["account_id"],
            delivery_mode=row["delivery_mode"],
            health=row["health"],
            checked_at=row["health_checked_at"],
            cached=row["id"] not in outcomes,
            error=row["last_error"] if row["health"] == "unhealthy" else None,
        )
        if row["id"] in outcomes:
            outcome = outcomes[row["id"]]
            with engine.begin() as conn:
                checked_at: datetime = conn.execute(
                    _WRITE_CHECK, {"id": row["id"], "health": outcome.health, "error": outcome.message}
                ).scalar_one()
            check.health = outcome.health or row["health"]
            check.checked_at = checked_at
            check.error_code = outcome.code
            check.error = outcome.message
            check.unavailable = outcome.unavailable
        results.append(check)
    return results


def check_providers(engine: Engine, settings: Settings) -> ComponentReport:
    required = "providers" in settings.required_components
    try:
        checks = check_connections(engine, settings)
    except SQLAlchemyError as exc:
        error = f"cannot read connections: database unavailable ({type(exc).__name__})"
        return ComponentReport(component="providers", status="down", required=required, error=error)
    healthy = sum(1 for c in checks if c.ok)
    return ComponentReport(
        component="providers",
        status=_providers_status([connection_verdict(c) for c in checks]),
        required=required,
        enabled_connections=len(checks),
        healthy=healthy,
        cache_seconds=settings.health_cache_seconds,
        connections=checks,
        message=None if checks else "no enabled provider connection",
    )


def connection_verdict(check: ConnectionCheck) -> str:
    """`healthy`, `unhealthy` (the provider refused the credentials) or `degraded` (no verdict this time)."""
    if check.ok:
        return "healthy"
    return "unhealthy" if check.health == "unhealthy" else "degraded"  # e.g. throttled: no verdict this time


def _providers_status(healths: list[str]) -> Status:
    """`up` when every enabled connection is healthy (or there is none), `down` when every one is unhealthy."""
    if all(h == "healthy" for h in healths):
        return "up"
    if all(h == "unhealthy" for h in healths):
        return "down"
    return "degraded"


_STORED_HEALTH = text("SELECT health FROM provider_connections WHERE enabled")


def stored_providers_status(engine: Engine, settings: Settings) -> ComponentReport:
    """The providers' status from what the last checks stored (`provider_connections.health`): no provider is
    called. What public health answers; the checks run through the detailed view, `si health`, and the
    connection test."""
    required = "providers" in settings.required_components
    try:
        with engine.connect() as conn:
            healths: list[str] = list(conn.execute(_STORED_HEALTH).scalars())
    except SQLAlchemyError as exc:
        error = f"cannot read connections: database unavailable ({type(exc).__name__})"
        return ComponentReport(component="providers", status="down", required=required, error=error)
    return ComponentReport(component="providers", status=_providers_status(healths), required=required)


# --------------------------------------------------------------------------------------------------------------
# dagster
# --------------------------------------------------------------------------------------------------------------


def check_dagster(settings: Settings) -> ComponentReport:
    required = "dagster" in settings.required_components
    client = DagsterClient.from_settings(settings)
    try:
        statuses = client.daemon_statuses()
        counts = client.run_counts()
    except DagsterUnavailable as exc:
        return ComponentReport(
            component="dagster", status="down", required=required, error=str(exc), webserver=client.base_url
        )
    now = _now()
    daemons = [
        DaemonOut(
            daemon=s.daemon_type,
            required=s.required,
            healthy=s.healthy,
            last_heartbeat_at=s.last_heartbeat_at,
            heartbeat_age_seconds=round((now - s.last_heartbeat_at).total_seconds(), 1)
            if s.last_heartbeat_at
            else None,
        )
        for s in statuses
    ]
    unhealthy = sorted(s.daemon_type for s in statuses if s.required and s.healthy is not True)
    error = None
    if not statuses:
        error = "no daemon has ever heartbeated"
    elif unhealthy:
        error = f"daemon not heartbeating: {', '.join(unhealthy)} (is `dagster-daemon run` up?)"
    return ComponentReport(
        component="dagster",
        status="down" if error else "up",
        required=required,
        error=error,
        webserver=client.base_url,
        daemons=daemons,
        run_queue=RunQueueOut(queued=counts.queued, in_progress=counts.in_progress),
    )


# --------------------------------------------------------------------------------------------------------------
# sandbox
# --------------------------------------------------------------------------------------------------------------


def check_sandbox(settings: Settings) -> ComponentReport:
    required = "sandbox" in settings.required_components
    if settings.servicetitan_env != "sandbox":
        message = f"SERVICETITAN_ENV={settings.servicetitan_env}"
        return ComponentReport(component="sandbox", status="disabled", required=required, message=message)
    url = settings.servicetitan_sandbox_url.rstrip("/") + "/_sandbox/health"
    try:
        r = httpx.get(url, timeout=settings.dagster_timeout_seconds)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    except (httpx.HTTPError, ValueError) as exc:
        error = f"unreachable ({type(exc).__name__})"
        return ComponentReport(component="sandbox", status="down", required=required, url=url, error=error)
    if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "ok":
        error = f"HTTP {r.status_code}"
        return ComponentReport(component="sandbox", status="down", required=required, url=url, error=error)
    loaded = body.get("definitions_loaded")
    tenants = body.get("tenants")
    return ComponentReport(
        component="sandbox",
        status="up" if loaded else "degraded",
        required=required,
        url=url,
        definitions_loaded=bool(loaded),
        tenants=tenants if isinstance(tenants, int) else None,
    )


# --------------------------------------------------------------------------------------------------------------
# all together
# --------------------------------------------------------------------------------------------------------------


def check_component(name: str, engine: Engine, settings: Settings) -> ComponentReport:
    """One component's report. Raises KeyError for an unknown name; never raises for a failing check (a bug in
    a check is reported as that component being down, so health endpoints never answer 500)."""
    checks: dict[str, Callable[[], ComponentReport]] = {
        "db": lambda: check_db(engine, settings),
        "providers": lambda: check_providers(engine, settings),
        "dagster": lambda: check_dagster(settings),
        "sandbox": lambda: check_sandbox(settings),
    }
    if name not in checks:
        raise KeyError(name)
    try:
        return checks[name]()
    except Exception as exc:
        log.exception("health check %s raised", name)
        return ComponentReport(
            component=name,
            status="down",
            required=name in settings.required_components,
            error=f"check failed ({type(exc).__name__})",
        )


def check_all(engine: Engine, settings: Settings) -> HealthReport:
    """Every component, checked concurrently (the slowest bounds the answer)."""
    with ThreadPoolExecutor(max_workers=len(HEALTH_COMPONENTS), thread_name_prefix="health") as pool:
        futures = {name: pool.submit(check_component, name, engine, settings) for name in HEALTH_COMPONENTS}
        return HealthReport.of({name: f.result() for name, f in futures.items()})
