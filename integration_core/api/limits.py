"""Request-body size limit: a pure ASGI middleware that runs before routing, authentication and parsing.

- A `Content-Length` above the limit is answered 413 at once: the body is never read.
- A body without `Content-Length` (chunked) is read here, counting bytes, up to the limit; past it the answer is
  413 and the rest is never read. Within it, the buffered body is handed on unchanged.

Limits are per path prefix (the longest matching prefix wins, else the default), so an endpoint that takes larger
bodies (e.g. a provider's webhooks) can get its own limit without raising it for everything else. The API's
default is `API_MAX_BODY_BYTES` (docs/security.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _reply(status: int, detail: str) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, default: int, limits: Mapping[str, int] | None = None) -> None:
        if default < 0 or any(v < 0 for v in (limits or {}).values()):
            raise ValueError("body size limits must not be negative")
        self.app = app
        self.default = default
        # longest prefix first
        self.limits = sorted((limits or {}).items(), key=lambda kv: len(kv[0]), reverse=True)

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        length: str | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            if not length.strip().isdigit():
                await self._send(send, 400, "invalid Content-Length")
                return
            if int(length) > limit:
                await self._send(send, 413, f"request body too large: at most {limit} bytes")
                return
            await self.app(scope, receive, send)
            return
        if not chunked:
            await self.app(scope, receive, send)  # no body
            return
        # a streamed body: read it here, counting, before anything parses it
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody left to answer
                return
            received += len(message.get("body", b""))
            if received > limit:
                await self._send(send, 413, f"request body too large: at most {limit} bytes")
                return
            messages.append(message)
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _send(send: Send, status: int, detail: str) -> None:
        start, body = _reply(status, detail)
        await send(start)
        await send(body)
