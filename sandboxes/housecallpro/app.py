"""The Housecall Pro sandbox ASGI app (Starlette) and `serve()`."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes.common.app import build_app, serve_app
from sandboxes.common.webhooks import ForwardingListener, WebhookEmitter

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

    return build_app(
        routes,
        error=ApiError,
        definitions=definitions,
        preload_definitions=config.preload_definitions,
        office=office,
        webhooks=webhooks,
        name="hcp",
        state={"sandbox": sandbox, "config": config},
    )


def serve(
    host: str = "127.0.0.1", port: int = 8101, config: HcpConfig | None = None, *, log_level: str = "info"
) -> None:
    """Run the sandbox under uvicorn until interrupted (blocking). Access logs stay off: query strings (`q`)
    carry homeowner data."""
    serve_app(create_app(config), host, port, log_level=log_level)
