"""Health: unauthenticated, cheap, honest (503 when the database is unreachable)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

router = APIRouter(prefix="/api/health", tags=["health"])


def check_database(factory: sessionmaker[Session]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        with factory() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


@router.get("", include_in_schema=False)
@router.get("/")
def health(request: Request) -> JSONResponse:
    db = check_database(request.app.state.session_factory)
    healthy = db["status"] == "up"
    return JSONResponse(
        {"status": "healthy" if healthy else "unhealthy", "components": {"database": db}},
        status_code=200 if healthy else 503,
    )
