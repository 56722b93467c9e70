"""Provider-neutral HTTP plumbing shared by the provider clients (ServiceTitan, Housecall Pro).

Each provider's ``errors.py`` stays the one place where *its* answers become the five classes of ``base.py``;
what reads the same for every provider lives here:

- :func:`classify_transport_error`: a request that got no answer. Never connected (connect error/timeout, pool
  timeout, unsupported protocol) → ``Retryable``; a timeout or lost connection after sending →
  ``UnknownOutcome`` for writes, ``Retryable`` for reads.
- :func:`classify_status`: a non-2xx answer once the provider has handled 429 and its own special cases:
  401/403 → ``AuthFailed``; 5xx and 408 → ``Retryable`` for reads, ``UnknownOutcome`` for writes; other 4xx →
  ``Permanent`` with the (redacted) field errors.
- :func:`retry_after_header`, :func:`json_body`, :func:`field_error_map`: reading an error answer.
- :func:`read_json`, :func:`parse_model`: reading a 2xx answer; an unreadable one is ``UnknownOutcome`` for a
  write (it may have created something) and ``Retryable`` for a read.
"""

from __future__ import annotations

import email.utils
import functools
import json
import ssl
import time
from collections.abc import Mapping
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from integration_core.providers.base import (
    AuthFailed,
    Permanent,
    ProviderError,
    Retryable,
    UnknownOutcome,
    redact,
)

__all__ = [
    "MAX_FIELD_ERRORS",
    "MAX_MESSAGE",
    "NEVER_SENT",
    "ClientOwner",
    "OwnedHttpClient",
    "classify_status",
    "classify_transport_error",
    "field_error_map",
    "is_write",
    "json_body",
    "parse_model",
    "read_json",
    "retry_after_header",
    "unreadable_response",
]

NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
"""Transport errors raised before any byte of the request could have left."""
MAX_FIELD_ERRORS = 20
MAX_MESSAGE = 500

M = TypeVar("M", bound=BaseModel)


def is_write(method: str) -> bool:
    """Whether a request could change state at the provider (anything but GET/HEAD)."""
    return method.upper() not in ("GET", "HEAD")


def json_body(response: httpx.Response) -> dict[str, Any]:
    """An error answer's JSON object; ``{}`` when it has none."""
    try:
        parsed = json.loads(response.content or b"null")
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def retry_after_header(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds named by ``Retry-After`` (delta-seconds or HTTP date); ``None`` when absent or unreadable."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def field_error_map(errors: object) -> dict[str, list[str]] | None:
    """A name → message(s) map as field errors (at most 20 names); ``None`` when ``errors`` is not a map."""
    if not isinstance(errors, dict):
        return None
    result: dict[str, list[str]] = {}
    for name, messages in list(errors.items())[:MAX_FIELD_ERRORS]:
        if isinstance(messages, list):
            result[str(name)] = [str(m) for m in messages]
        elif messages is not None:
            result[str(name)] = [str(messages)]
    return result


def classify_status(
    status: int,
    *,
    message: str,
    write: bool,
    field_errors: Mapping[str, list[str]],
    sensitive: list[str],
    common: Mapping[str, Any],
) -> ProviderError:
    """Classify a non-2xx, non-429 answer by its status (see the module docstring)."""
    if status == 401:
        return AuthFailed(message, code="unauthorized", **common)
    if status == 403:
        return AuthFailed(message, code="forbidden", **common)
    if status >= 500 or status == 408:
        if write:
            return UnknownOutcome(message, code="server_error_after_send", **common)
        return Retryable(message, code="server_error", **common)

    redacted = {
        redact(name, sensitive): [redact(m, sensitive)[:MAX_MESSAGE] for m in msgs]
        for name, msgs in field_errors.items()
    }
    if redacted:
        details = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in redacted.items())
        message = f"{message} ({details})"[: MAX_MESSAGE * 2]
    code = {400: "validation_error", 404: "not_found", 409: "conflict", 422: "unprocessable"}.get(
        status, f"http_{status}"
    )
    return Permanent(message, field_errors=redacted, code=code, **common)


def classify_transport_error(exc: httpx.TransportError, *, operation: str, write: bool, provider: str) -> ProviderError:
    """Classify a request that got no answer: could it have reached ``provider`` (its display name)?"""
    kind = type(exc).__name__
    if isinstance(exc, NEVER_SENT):
        return Retryable(f"{operation}: no connection to {provider} ({kind})", code="connection_failed")
    timed_out = isinstance(exc, httpx.TimeoutException)
    code = "timeout" if timed_out else "connection_lost"
    what = "timed out" if timed_out else "lost the connection"
    if write:
        return UnknownOutcome(f"{operation}: {what} after sending ({kind}); the write may have happened", code=code)
    return Retryable(f"{operation}: {what} ({kind})", code=code)


def unreadable_response(operation: str, write: bool, status: int | None, *, provider: str) -> ProviderError:
    """A 2xx answer whose body is not JSON."""
    message = f"{operation}: unreadable response from {provider}"
    if write:
        # The write was accepted but we cannot read what it created: reconcile by marker.
        return UnknownOutcome(message, code="bad_response", http_status=status)
    return Retryable(message, code="bad_response", http_status=status)


def read_json(response: httpx.Response, *, operation: str, write: bool, provider: str) -> Any:
    """A 2xx answer's JSON (``None`` for an empty body), or raise :func:`unreadable_response`."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise unreadable_response(operation, write, response.status_code, provider=provider) from None


def parse_model(model: type[M], data: Any, *, operation: str, write: bool) -> M:
    """``data`` as ``model``, or raise ``UnknownOutcome`` (write) / ``Retryable`` (read) naming the bad fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Never chain the ValidationError: its text quotes the input (homeowner data).
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})[:10]
        message = f"{operation}: response does not match the expected shape ({', '.join(fields)})"
        if write:
            raise UnknownOutcome(message, code="bad_response") from None
        raise Retryable(message, code="bad_response") from None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one verifying TLS context (httpx's default: certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR).

    httpx builds a new one for every client, and loading the CA bundle is ~0.1 s of CPU: once per delivery run and
    per provider check. Shared instead (an SSLContext is safe to share between clients), and loaded by the run
    launcher's forkserver before it forks run workers (pipelines/worker_preload.py), so a run pays nothing."""
    return httpx.create_ssl_context()


class OwnedHttpClient:
    """The ``httpx.AsyncClient`` plumbing of a provider client: injected (the test seam, never closed here) or
    built here with explicit timeouts and limits and no redirects (closed by :meth:`aclose`)."""

    _http: httpx.AsyncClient
    _owns_http: bool

    def _init_http(
        self,
        http_client: httpx.AsyncClient | None,
        transport: httpx.AsyncBaseTransport | None,
        *,
        timeout: httpx.Timeout,
        limits: httpx.Limits,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("pass either http_client or transport, not both")
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            transport=transport, timeout=timeout, limits=limits, follow_redirects=False, verify=tls_context()
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ClientOwner:
    """``aclose`` / ``async with`` for a provider: closing it closes its client."""

    client: OwnedHttpClient

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
