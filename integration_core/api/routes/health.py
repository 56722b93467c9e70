"""Health: unauthenticated, honest, cheap enough to poll (integration_core/operations/health.py does the checks).

`GET /api/health` answers 503 when a required component (`HEALTH_REQUIRED_COMPONENTS`, default `db`) is down,
200 otherwise (`degraded` names what else is not up). `GET /api/health/component/{name}` checks one component
and answers 503 when it is down. Neither carries a secret: connection errors are the provider boundary's
redacted messages, URLs are the configured service URLs.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from integration_core.operations import health as checks
from integration_core.settings import HEALTH_COMPONENTS, Settings

router = APIRouter(prefix="/api/health", tags=["health"])


class ComponentOut(BaseModel):
    """One component: `status` (up | degraded | down | disabled), whether it is `required`, and its details."""

    model_config = ConfigDict(extra="allow")

    status: Literal["up", "degraded", "down", "disabled"]
    required: bool


class HealthOut(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    required: list[str]
    components: dict[str, ComponentOut]


class ComponentHealthOut(ComponentOut):
    component: str


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get("", include_in_schema=False)
@router.get(
    "/",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "a required component is down"}},
)
def health(request: Request) -> JSONResponse:
    """Every component (db, providers, dagster, sandbox), checked concurrently; 503 when a required one is down."""
    report = checks.check_all(_engine(request), _settings(request))
    body: dict[str, Any] = report.as_dict()
    return JSONResponse(body, status_code=503 if report.required_down else 200)


@router.get(
    "/component/{name}",
    response_model=ComponentHealthOut,
    responses={
        404: {"description": f"unknown component (known: {', '.join(HEALTH_COMPONENTS)})"},
        503: {"model": ComponentHealthOut, "description": "the component is down"},
    },
)
def component(name: str, request: Request) -> JSONResponse:
    """One component: `db` (round trip), `providers` (token + a cheap read per enabled connection, cached
    `HEALTH_CACHE_SECONDS`), `dagster` (daemon heartbeats, run queue), `sandbox` (when SERVICETITAN_ENV=sandbox).
    503 when it is down."""
    if name not in HEALTH_COMPONENTS:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"unknown component {name[:64]!r}; known: {', '.join(HEALTH_COMPONENTS)}"
        )
    report = checks.check_component(name, _engine(request), _settings(request))
    return JSONResponse({"component": name, **report.as_dict()}, status_code=503 if report.status == "down" else 200)
