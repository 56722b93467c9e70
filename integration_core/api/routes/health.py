"""Health over HTTP (integration_core/operations/health.py does the checks).

Public, no token (`router`): `GET /api/health` and `GET /api/health/component/{name}` answer the status alone —
overall and per component, up/degraded/down/disabled — with no ids, URLs, error text or counts. They never call a
provider: the providers' status is what the last checks stored. Answers are cached in the process for
`HEALTH_PUBLIC_CACHE_SECONDS`, so polling costs at most one round of checks per period. 503 when a required
component (`HEALTH_REQUIRED_COMPONENTS`, default `db`) is down, or the one component asked for is.

With the token (`admin_router`): `GET /api/admin/health` and `GET /api/admin/health/component/{name}` answer
the details (`si health` prints the same): connection checks (token + a cheap read per enabled connection,
cached `HEALTH_CACHE_SECONDS`), Dagster daemons and run queue, sandbox, with the same status codes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from integration_core.operations import health as checks
from integration_core.settings import HEALTH_COMPONENTS, Settings

router = APIRouter(prefix="/api/health", tags=["health"])
admin_router = APIRouter(prefix="/api/admin/health", tags=["health"])

_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"description": f"unknown component (known: {', '.join(HEALTH_COMPONENTS)})"}
}


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _known(name: str) -> None:
    if name not in HEALTH_COMPONENTS:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"unknown component {name[:64]!r}; known: {', '.join(HEALTH_COMPONENTS)}"
        )


class StatusCache:
    """Each component's public status, kept `ttl` seconds; one caller refreshes a stale entry, the others wait
    for it (a burst of anonymous requests makes one round of checks)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, checks.ComponentReport]] = {}
        self._locks = {name: threading.Lock() for name in HEALTH_COMPONENTS}

    def get(self, name: str, check: Callable[[], checks.ComponentReport]) -> checks.ComponentReport:
        with self._locks[name]:
            entry = self._entries.get(name)
            if entry is not None and time.monotonic() < entry[0]:
                return entry[1]
            report = check()
            self._entries[name] = (time.monotonic() + self.ttl, report)
            return report


def _public_check(name: str, engine: Engine, settings: Settings) -> checks.ComponentReport:
    if name == "providers":
        return checks.stored_providers_status(engine, settings)  # never a live provider call
    return checks.check_component(name, engine, settings)


def _cache(request: Request) -> StatusCache:
    cache: StatusCache | None = getattr(request.app.state, "health_cache", None)
    if cache is None:
        cache = request.app.state.health_cache = StatusCache(_settings(request).health_public_cache_seconds)
    return cache


def _public(name: str, request: Request) -> checks.ComponentReport:
    engine, settings = _engine(request), _settings(request)
    return _cache(request).get(name, lambda: _public_check(name, engine, settings))


@router.get("", include_in_schema=False)
@router.get(
    "/",
    response_model=checks.PublicHealth,
    responses={503: {"model": checks.PublicHealth, "description": "a required component is down"}},
)
def health(request: Request) -> JSONResponse:
    """Overall status and each component's status (up | degraded | down | disabled); 503 when a required
    component is down. No token; no details (those are at `/api/admin/health`)."""
    with ThreadPoolExecutor(max_workers=len(HEALTH_COMPONENTS), thread_name_prefix="public-health") as pool:
        futures = {name: pool.submit(_public, name, request) for name in HEALTH_COMPONENTS}  # the slowest bounds it
        report = checks.HealthReport.of({name: f.result() for name, f in futures.items()})
    body = checks.PublicHealth(
        status=report.status,
        components={n: checks.ComponentStatus(status=c.status) for n, c in report.components.items()},
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if report.required_down else 200)


@router.get(
    "/component/{name}",
    response_model=checks.PublicComponentHealth,
    responses={**_UNKNOWN, 503: {"model": checks.PublicComponentHealth, "description": "the component is down"}},
)
def component(name: str, request: Request) -> JSONResponse:
    """One component's status: `db`, `providers` (as the last connection checks left it), `dagster`, `sandbox`.
    503 when it is down."""
    _known(name)
    report = _public(name, request)
    body = checks.PublicComponentHealth(component=name, status=report.status)
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if report.status == "down" else 200)


@admin_router.get(
    "",
    response_model=checks.HealthReport,
    responses={503: {"model": checks.HealthReport, "description": "a required component is down"}},
)
def health_details(request: Request) -> JSONResponse:
    """Every component (db, providers, dagster, sandbox) with what its check found, checked concurrently;
    provider connections are checked live (token + a cheap read), each at most once per
    `HEALTH_CACHE_SECONDS`. 503 when a required component is down."""
    report = checks.check_all(_engine(request), _settings(request))
    return JSONResponse(
        report.model_dump(mode="json", exclude_none=True), status_code=503 if report.required_down else 200
    )


@admin_router.get(
    "/component/{name}",
    response_model=checks.ComponentReport,
    responses={**_UNKNOWN, 503: {"model": checks.ComponentReport, "description": "the component is down"}},
)
def component_details(name: str, request: Request) -> JSONResponse:
    """One component with what its check found; 503 when it is down."""
    _known(name)
    report = checks.check_component(name, _engine(request), _settings(request))
    return JSONResponse(
        report.model_dump(mode="json", exclude_none=True), status_code=503 if report.status == "down" else 200
    )
