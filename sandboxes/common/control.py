"""Pieces of the sandboxes' own control APIs (`/_sandbox/...`) that do not depend on the provider: the control
error answer `{"error": message, "field": name}`, reading a JSON object body, typed optional fields, amounts,
the office endpoints, and turning a route table into Starlette routes that answer `ControlError`s."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .config import ConfigError
from .errors import json_response
from .office import OfficeLoop, OfficeSettings

Endpoint = Callable[[Request], Awaitable[Response]]


class ControlError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.message}
        if self.field:
            body["field"] = self.field
        return json_response(self.status, body)


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body); 400 if not JSON, 422 if not an object."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError(422, "body must be a JSON object", "$")
    return body


def opt(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """`body[key]` if present and of `kind` (a bool is not a number), None if absent or null; 422 otherwise."""
    value = body.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ControlError(422, f"{key} has the wrong type", key)
    return value


def amount(raw: Any, name: str) -> Decimal | None:
    """A JSON number >= 0 as a Decimal (None when absent); a 422 naming the field otherwise."""
    if raw is None:
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ControlError(422, f"{name} must be a number", name) from None
    if isinstance(raw, bool) or not value.is_finite() or value < 0:
        raise ControlError(422, f"{name} must be a number >= 0", name)
    return value


def route_table(table: Sequence[tuple[str, str, Endpoint]]) -> list[Route]:
    """`(method, path, endpoint)` rows as Starlette routes; a `ControlError` raised by an endpoint is answered."""

    def wrap(fn: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except ControlError as exc:
                return exc.response()

        return endpoint

    return [Route(path, wrap(fn), methods=[method]) for method, path, fn in table]


class _OfficeConfig(OfficeSettings, Protocol):
    def to_json(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=_OfficeConfig)


def office_routes(
    office: OfficeLoop[C, Any], parse: Callable[[Any, C], C], prefix: str = "/_sandbox"
) -> list[tuple[str, str, Endpoint]]:
    """`GET|PUT {prefix}/office` (the office's configuration and tick count; PUT parses with `parse(payload,
    current)`, 422 on a `ConfigError`) and `POST {prefix}/office/tick` (one step now)."""

    async def get_office(request: Request) -> Response:
        return json_response(200, {**office.config.to_json(), "ticks": office.ticks})

    async def put_office(request: Request) -> Response:
        try:
            config = parse(await read_json(request), office.config)
        except ConfigError as exc:
            raise ControlError(422, exc.message, exc.field) from None
        office.configure(config)
        return json_response(200, {**config.to_json(), "ticks": office.ticks})

    async def office_tick(request: Request) -> Response:
        return json_response(200, {"moved": office.tick(), "ticks": office.ticks})

    return [
        ("GET", prefix + "/office", get_office),
        ("PUT", prefix + "/office", put_office),
        ("POST", prefix + "/office/tick", office_tick),
    ]


__all__ = ["ControlError", "Endpoint", "amount", "office_routes", "opt", "read_json", "route_table"]
