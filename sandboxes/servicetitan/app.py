"""The sandbox ASGI app (Starlette) and `serve()` for `si sandbox serve`."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes.common.app import build_app, serve_app
from sandboxes.common.webhooks import WebhookEmitter

from .api import ENDPOINTS, Endpoint, TenantApi
from .config import SandboxConfig
from .control import Control
from .errors import ApiError
from .office import Office
from .spec import Definitions, get_definitions
from .state import Sandbox
from .webhooks import ServiceTitanWebhooks

log = logging.getLogger(__name__)
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _endpoint(api: TenantApi, ep: Endpoint) -> Any:
    async def endpoint(request: Request) -> Response:
        return await api.dispatch(ep, request)

    endpoint.__name__ = ep.handler.__name__
    return endpoint


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

    return build_app(
        routes,
        error=ApiError,
        definitions=definitions,
        preload_definitions=config.preload_definitions,
        office=office,
        webhooks=webhooks,
        name="st",
        state={"sandbox": sandbox, "config": config},
    )


def serve(
    host: str = "127.0.0.1", port: int = 8765, config: SandboxConfig | None = None, *, log_level: str = "info"
) -> None:
    """Run the sandbox under uvicorn until interrupted (blocking). Access logs stay off: query strings
    (phone, name filters) carry homeowner data."""
    serve_app(create_app(config), host, port, log_level=log_level)
