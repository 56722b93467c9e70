"""The ASGI plumbing both sandboxes share: the dropped-connection answer (fault mode `drop`) and the uvicorn
log filter that hides it, 404/405 answers in the provider's error shape, the lifespan (definitions loaded in
the background, the office loop, the webhook emitter), the `app.state` a test reads, and `serve()`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .webhooks import WebhookEmitter


class ConnectionDropped(Exception):
    """Raised after `http.response.start` so the server closes the connection mid-response (fault mode `drop`)."""


class DroppedResponse(Response):
    """Starts a 200 answer, then fails: uvicorn closes the connection, the client sees a truncated response."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})
        raise ConnectionDropped("sandbox fault: connection dropped after the write was committed")


class _HideDroppedConnections(logging.Filter):
    """uvicorn logs a traceback when the app fails mid-response; for the injected `drop` fault that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info
        return not (exc and exc[0] is not None and issubclass(exc[0], ConnectionDropped))


def install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in logger.filters):
        logger.addFilter(_HideDroppedConnections())


class _Answers(Protocol):
    def response(self) -> Response: ...


class _Loadable(Protocol):
    @property
    def loaded(self) -> bool: ...

    def load(self) -> Any: ...


class _Office(Protocol):
    def run(self) -> Coroutine[Any, Any, None]: ...


def error_handlers(
    error: Callable[[int, str], _Answers],
) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Starlette's 404 and 405 answered in the provider's error shape (`error(status, message)`)."""

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, f"No route for {request.method} {request.url.path}").response()

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, f"{request.method} is not allowed on {request.url.path}").response()

    return {404: not_found, 405: method_not_allowed}


def build_app(
    routes: list[Route],
    *,
    error: Callable[[int, str], _Answers],
    definitions: _Loadable,
    preload_definitions: bool,
    office: _Office,
    webhooks: WebhookEmitter,
    name: str,
    state: dict[str, Any],
) -> Starlette:
    """The Starlette app of a sandbox: its routes, 404/405 in its error shape, and a lifespan that loads the
    definitions in a thread (if `preload_definitions`), runs the office loop and the webhook emitter. `state`
    (with `definitions`, `office` and `webhooks`) is set on `app.state`; `name` names the thread and task."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if preload_definitions and not definitions.loaded:
            threading.Thread(target=definitions.load, name=f"{name}-definitions", daemon=True).start()
        task = asyncio.create_task(office.run(), name=f"{name}-sandbox-office")
        webhooks.start()
        try:
            yield
        finally:
            webhooks.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=error_handlers(error))
    for key, value in {**state, "office": office, "definitions": definitions, "webhooks": webhooks}.items():
        setattr(app.state, key, value)
    install_log_filter()
    return app


def serve_app(app: Starlette, host: str, port: int, *, log_level: str = "info") -> None:
    """Run `app` under uvicorn until interrupted (blocking). Access logs stay off: query strings carry
    homeowner data."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )


__all__ = [
    "ConnectionDropped",
    "DroppedResponse",
    "build_app",
    "error_handlers",
    "install_log_filter",
    "serve_app",
]
