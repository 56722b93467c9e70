"""The Housecall Pro sandbox ASGI app (Starlette) and `serve()`."""

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

from sandboxes.common.webhooks import ForwardingListener, WebhookEmitter
from sandboxes.servicetitan.app import _install_log_filter

from .api import ENDPOINTS, Api, Endpoint
from .config import HcpConfig
from .control import Control
from .errors import ApiError
from .office import Office
from .spec import Definitions, get_definitions
from .state import Sandbox

log = logging.getLogger(__name__)


def _endpoint(api: Api, ep: Endpoint) -> Any:
    async def endpoint(request: Request) -> Response:
        return await api.dispatch(ep, request)

    endpoint.__name__ = ep.handler.__name__
    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    return ApiError(404, f"No route for {request.method} {request.url.path}").response()


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return ApiError(405, f"{request.method} is not allowed on {request.url.path}").response()


def create_app(config: HcpConfig | None = None, *, definitions: Definitions | None = None) -> Starlette:
    """A fresh sandbox (its own state) as an ASGI app. `app.state.sandbox` / `.office` / `.config` expose it;
    attach event listeners with `app.state.sandbox.add_listener(...)`."""
    config = config or HcpConfig()
    definitions = definitions or get_definitions()
    sandbox = Sandbox(config)
    office = Office(sandbox)
    api = Api(sandbox, definitions)
    control = Control(sandbox, office, definitions)
    # signed webhooks to a configured URL per company (sandboxes/common/webhooks.py, docs/webhooks.md)
    webhooks = WebhookEmitter(header="Api-Signature", encoding="hex", timestamp_header="Api-Timestamp")
    sandbox.add_listener(ForwardingListener(webhooks))

    # One Route per path with every method it serves, so an unserved method answers 405 (not 404).
    by_path: dict[str, list[Endpoint]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.template, []).append(ep)
    routes: list[Route] = control.routes() + webhooks.routes()
    for template, eps in by_path.items():
        for ep in eps:
            routes.append(Route(template, _endpoint(api, ep), methods=[ep.method]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.preload_definitions and not definitions.loaded:
            threading.Thread(target=definitions.load, name="hcp-definitions", daemon=True).start()
        task = asyncio.create_task(office.run(), name="hcp-sandbox-office")
        webhooks.start()
        try:
            yield
        finally:
            webhooks.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: _not_found, 405: _method_not_allowed})
    app.state.sandbox = sandbox
    app.state.office = office
    app.state.config = config
    app.state.definitions = definitions
    app.state.webhooks = webhooks
    _install_log_filter()
    return app


def serve(
    host: str = "127.0.0.1", port: int = 8101, config: HcpConfig | None = None, *, log_level: str = "info"
) -> None:
    """Run the sandbox under uvicorn until interrupted (blocking). Access logs stay off: query strings (`q`)
    carry homeowner data."""
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
