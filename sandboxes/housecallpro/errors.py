"""Error answers of the Housecall Pro sandbox.

Housecall Pro's definition describes no error bodies (only `GET /jobs/{id}` declares a 404, as "an object").
The sandbox answers every error as `{"error": {"status": N, "message": "...", "errors": {field: [msg]}}}`
(`errors` only on validation failures); docs/sandbox.md records this as the sandbox's choice.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from sandboxes.common.errors import json_response as json_response

DEFAULT_MESSAGES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_body(status: int, message: str | None = None, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    inner: dict[str, Any] = {"status": status, "message": message or DEFAULT_MESSAGES.get(status, "Error")}
    if errors:
        inner["errors"] = errors
    return {"error": inner}


class ApiError(Exception):
    """Raised by handlers; answered as the sandbox's error body with `status`."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or DEFAULT_MESSAGES.get(status, "Error"))
        self.status = status
        self.message = message
        self.errors = errors or {}
        self.headers = headers

    def response(self) -> Response:
        return json_response(self.status, error_body(self.status, self.message, self.errors), self.headers)


def field_error(name: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, message, {name: [message]})
