"""The HTTP API (FastAPI). Paths are the troubleshooting guide's; everything but public health needs the token.

Before anything else (routing, auth, parsing) a request body is held to `API_MAX_BODY_BYTES` (api/limits.py).
The OpenAPI document lists the error answers every operation can give (401, 404, 413, 422; `_document_errors`).
docs/security.md has the rules.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from integration_core.api.deps import require_token
from integration_core.api.limits import BodySizeLimit
from integration_core.api.routes import admin, health, jobs, reports, routings, webhooks
from integration_core.db.engine import get_engine, session_factory
from integration_core.errors import Conflict, InvalidInput, NotFound
from integration_core.operations.dagster_client import DagsterUnavailable
from integration_core.schemas import ErrorOut
from integration_core.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Service Integration",
        version="0.1.0",
        description="Delivers TradeEngage referrals into field-service systems exactly once.",
    )
    app.state.settings = settings
    app.state.engine = engine or get_engine()
    app.state.session_factory = session_factory(app.state.engine)

    app.state.health_cache = health.StatusCache(settings.health_public_cache_seconds)
    # per path prefix: a larger limit for the provider webhooks (WEBHOOK_MAX_BODY_BYTES)
    app.add_middleware(
        BodySizeLimit,
        default=settings.api_max_body_bytes,
        limits={"/webhooks/": settings.webhook_max_body_bytes},
    )

    protected = [Depends(require_token)]
    app.include_router(health.router)
    app.include_router(health.admin_router, dependencies=protected)
    app.include_router(jobs.router, dependencies=protected)
    app.include_router(routings.router, dependencies=protected)
    app.include_router(admin.router, dependencies=protected)
    app.include_router(reports.router, dependencies=protected)  # the daily reports (docs/reports.md)
    app.include_router(webhooks.router)  # signed by the provider, not the API token (docs/webhooks.md)
    app.include_router(webhooks.admin_router)  # the inbox for operators (token, on the router)

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": list(loc), "msg": msg, "type": "value_error"} for loc, msg in exc.errors]},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(DagsterUnavailable)
    async def _dagster_down(_: Request, exc: DagsterUnavailable) -> JSONResponse:
        log.warning("%s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "10"})

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        log.warning("integrity error on constraint %s", constraint)
        return JSONResponse(
            {"detail": f"the request conflicts with stored data (constraint {constraint})"},
            status_code=status.HTTP_409_CONFLICT,
        )

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", type(exc.orig).__name__)
        return JSONResponse(
            {"detail": "database unavailable, retry later"}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error: %s", type(exc.orig).__name__)
        return JSONResponse({"detail": "the database refused the request"}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    _document_errors(app)
    return app


_ERRORS = {
    "401": "missing or invalid API token (`Authorization: Bearer <API_TOKEN>`)",
    "404": "no such record (a path id names nothing)",
    "413": "request body larger than the limit (`API_MAX_BODY_BYTES`)",
}


def _document_errors(app: FastAPI) -> None:
    """Add the error answers FastAPI cannot infer to every operation of the OpenAPI document: 401 where the token
    is required, 404 where a path parameter names a record, 413 where a body is taken (422 FastAPI adds itself).
    An operation's own description of one of them is kept."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = FastAPI.openapi(app)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("ErrorOut", ErrorOut.model_json_schema())
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        for item in document.get("paths", {}).values():
            for method, op in item.items():
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                answers = op.setdefault("responses", {})
                codes = []
                if op.get("security"):
                    codes.append("401")
                if any(p.get("in") == "path" for p in op.get("parameters", [])):
                    codes.append("404")
                if "requestBody" in op:
                    codes.append("413")
                for code in codes:
                    answer = answers.setdefault(code, {"description": _ERRORS[code]})
                    answer.setdefault("content", error)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
