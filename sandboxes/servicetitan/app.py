"""The sandbox ASGI app (Starlette) and `serve()` for `si sandbox serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes.common.webhooks import WebhookEmitter

from .api import ENDPOINTS, ConnectionDropped, Endpoint, TenantApi
from .config import SandboxConfig
from .control import Control
from .errors import ApiError
from .office import Office
from .spec import Definitions, get_definitions
from .state import Sandbox
from .webhooks import ServiceTitanWebhooks

log = logging.getLogger(__name__)
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class _HideDroppedConnections(logging.Filter):
    """uvicorn logs a traceback when the app fails mid-response; for the injected `drop` fault that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info
        return not (exc and exc[0] is not None and issubclass(exc[0], ConnectionDropped))


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in logger.filters):
        logger.addFilter(_HideDroppedConnections())


def _endpoint(api: TenantApi, ep: Endpoint) -> Any:
    async def endpoint(request: Request) -> Response:
        return await api.dispatch(ep, request)

    endpoint.__name__ = ep.handler.__name__
    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    return ApiError(404, f"No route for {request.method} {request.url.path}").response()


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return ApiError(405, f"{request.method} is not allowed on {request.url.path}").response()


def create_app(config: SandboxConfig | None = None, *, definitions: Definitions | None = None) -> Starlette:
    """A fresh sandbox (its own state) as an ASGI app. `app.state.sandbox` / `.office` / `.config` expose it."""
    config = config or SandboxConfig()
    definitions = definitions or get_definitions()
    sandbox = Sandbox(config)
    office = Office(sandbox)
    api = TenantApi(sandbox, definitions)
    control = Control(sandbox, office, definitions)
    webhooks = WebhookEmitter()
    sandbox.on_event = ServiceTitanWebhooks(webhooks)

    routes: list[Route] = [Route("/connect/token", api.token, methods=["POST"])]
    routes += [Route(ep.starlette_path, _endpoint(api, ep), methods=[ep.method]) for ep in ENDPOINTS]
    routes += control.routes()
    routes += webhooks.routes()
    routes.append(Route("/{module}/v2/tenant/{tenant}/{rest:path}", api.not_implemented, methods=ALL_METHODS))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.preload_definitions and not definitions.loaded:
            threading.Thread(target=definitions.load, name="st-definitions", daemon=True).start()
        task = asyncio.create_task(office.run(), name="sandbox-office")
        webhooks.start()
        try:
            yield
        finally:
            webhooks.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
    app.state.sandbox = sandbox
    app.state.office = office
    app.state.config = config
    app.state.definitions = definitions
    app.state.webhooks = webhooks
    _install_log_filter()
    return app


def serve(
    host: str = "127.0.0.1", port: int = 8765, config: SandboxConfig | None = None, *, log_level: str = "info"
) -> None:
    """Run the sandbox under uvicorn until interrupted (blocking). Access logs stay off: query strings
    (phone, name filters) carry homeowner data."""
    import uvicorn

    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
