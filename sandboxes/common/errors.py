"""JSON answers as both sandboxes write them (compact, UTF-8). The error bodies themselves are each provider's
own (`sandboxes/<provider>/errors.py`)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(body, status_code=status, headers=headers, media_type=JSON_CONTENT_TYPE)


__all__ = ["JSON_CONTENT_TYPE", "json_response"]
