"""ServiceTitan's error answers (`ApiErrorResponse`: type, title, status, traceId, errors, data)."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.responses import Response

from sandboxes.common.errors import json_response as json_response

ERROR_TYPES: dict[int, str] = {
    400: "https://tools.ietf.org/html/rfc7231#section-6.5.1",
    401: "https://tools.ietf.org/html/rfc7235#section-3.1",
    403: "https://tools.ietf.org/html/rfc7231#section-6.5.3",
    404: "https://tools.ietf.org/html/rfc7231#section-6.5.4",
    409: "https://tools.ietf.org/html/rfc7231#section-6.5.8",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    500: "https://tools.ietf.org/html/rfc7231#section-6.6.1",
    502: "https://tools.ietf.org/html/rfc7231#section-6.6.3",
    503: "https://tools.ietf.org/html/rfc7231#section-6.6.4",
    504: "https://tools.ietf.org/html/rfc7231#section-6.6.5",
}

DEFAULT_TITLES: dict[int, str] = {
    400: "One or more validation errors occurred.",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "An unexpected error occurred.",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def trace_id() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def error_body(status: int, title: str | None = None, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "type": ERROR_TYPES.get(status, "about:blank"),
        "title": title if title is not None else DEFAULT_TITLES.get(status, "Error"),
        "status": status,
        "traceId": trace_id(),
        "errors": errors or {},
        "data": {},
    }


class ApiError(Exception):
    """Raised by handlers; answered as ServiceTitan's error body with `status`."""

    def __init__(
        self,
        status: int,
        title: str | None = None,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title or DEFAULT_TITLES.get(status, "Error"))
        self.status = status
        self.title = title
        self.errors = errors or {}
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.title, self.errors)

    def response(self) -> Response:
        return json_response(self.status, self.body(), self.headers)


def validation_error(errors: dict[str, list[str]]) -> ApiError:
    return ApiError(400, None, errors)


def field_error(name: str, message: str) -> ApiError:
    return ApiError(400, None, {name: [message]})
