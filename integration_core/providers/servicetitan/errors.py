"""The one place where ServiceTitan answers become :mod:`integration_core.providers.base` errors.

:func:`classify_response` handles every non-2xx answer (API and token endpoint); :func:`classify_transport_error`
handles requests that got no answer. The rules (see the table in ``base.py``):

- 429 → ``RateLimited``, waiting the ``Retry-After`` header, else the "Try again in N seconds." of the title.
- 401 (after the auth flow's one refresh-and-retry), 403, and ``invalid_client``/``unauthorized_client``/
  ``invalid_grant``/``invalid_scope`` from the token endpoint → ``AuthFailed``.
- 5xx (and 408) → ``Retryable`` for reads and token requests; ``UnknownOutcome`` for writes, because the
  provider may have committed before failing.
- Other 4xx → ``Permanent`` with the field errors of ServiceTitan's ``ApiErrorResponse``.
- No answer: a connection that never opened (connect error/timeout, pool timeout) wrote nothing →
  ``Retryable``; a read/write timeout or dropped connection after sending → ``UnknownOutcome`` for writes,
  ``Retryable`` for reads.

Messages keep ServiceTitan's title and field errors but are redacted (``sensitive`` values, e-mails, phones).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from integration_core.providers.base import (
    AuthFailed,
    Permanent,
    ProviderError,
    RateLimited,
    Retryable,
    UnknownOutcome,
    redact,
)

__all__ = ["DEFAULT_RETRY_AFTER", "classify_response", "classify_transport_error", "parse_retry_after"]

DEFAULT_RETRY_AFTER = 1.0
"""Seconds to wait after a 429 that names no wait at all (ServiceTitan's window is one second)."""

_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)
_AUTH_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_grant", "invalid_scope"})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_MAX_FIELD_ERRORS = 20
_MAX_MESSAGE = 500


def parse_retry_after(headers: Mapping[str, str], title: str | None, *, now: float | None = None) -> float:
    """Seconds to wait: ``Retry-After`` (delta-seconds or HTTP date), else the title's "Try again in N seconds."."""
    raw = headers.get("retry-after")
    if raw:
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if title:
        match = _TRY_AGAIN.search(title)
        if match:
            return float(match.group(1))
    return DEFAULT_RETRY_AFTER


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        parsed = json.loads(response.content or b"null")
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _field_errors(body: Mapping[str, Any]) -> dict[str, list[str]]:
    errors = body.get("errors")
    if not isinstance(errors, dict):
        return {}
    result: dict[str, list[str]] = {}
    for name, messages in list(errors.items())[:_MAX_FIELD_ERRORS]:
        if isinstance(messages, list):
            result[str(name)] = [str(m) for m in messages]
        elif messages is not None:
            result[str(name)] = [str(messages)]
    return result


def _title(body: Mapping[str, Any], response: httpx.Response) -> str:
    for key in ("title", "error_description", "message", "error"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return response.reason_phrase or f"HTTP {response.status_code}"


def classify_response(
    response: httpx.Response,
    *,
    operation: str,
    write: bool,
    token_endpoint: bool = False,
    sensitive: Iterable[str] = (),
) -> ProviderError:
    """Classify a non-2xx ServiceTitan answer. ``write`` is True for anything but GET/HEAD.

    Args:
        response: the answer (its body already read).
        operation: a short name of what was attempted (``create_booking``), used in the message.
        write: whether the request could have changed state at the provider.
        token_endpoint: the answer came from ``/connect/token`` (IdentityServer error shape).
        sensitive: values that must not appear in the message (homeowner data, secrets).
    """
    status = response.status_code
    body = _body(response)
    sensitive = list(sensitive)
    title = redact(_title(body, response), sensitive)[:_MAX_MESSAGE]
    trace_id = body.get("traceId") if isinstance(body.get("traceId"), str) else None
    trace_id = trace_id or response.headers.get("x-trace-id") or response.headers.get("traceparent")
    common: dict[str, Any] = {"http_status": status, "trace_id": trace_id}
    message = f"{operation}: {title}"

    if status == 429:
        retry_after = parse_retry_after(response.headers, _title(body, response))
        return RateLimited(message, retry_after=retry_after, **common)

    if token_endpoint:
        error = body.get("error")
        if status in (400, 401, 403) and (error in _AUTH_ERRORS or status in (401, 403)):
            return AuthFailed(message, code=str(error) if error in _AUTH_ERRORS else "token_rejected", **common)
        if status >= 500 or status == 408:
            return Retryable(message, code="token_endpoint_unavailable", **common)
        return AuthFailed(message, code="token_rejected", **common)

    if status == 401:
        return AuthFailed(message, code="unauthorized", **common)
    if status == 403:
        return AuthFailed(message, code="forbidden", **common)
    if status >= 500 or status == 408:
        if write:
            return UnknownOutcome(message, code="server_error_after_send", **common)
        return Retryable(message, code="server_error", **common)

    field_errors = {
        redact(name, sensitive): [redact(m, sensitive)[:_MAX_MESSAGE] for m in msgs]
        for name, msgs in _field_errors(body).items()
    }
    if field_errors:
        details = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in field_errors.items())
        message = f"{message} ({details})"[: _MAX_MESSAGE * 2]
    code = {400: "validation_error", 404: "not_found", 409: "conflict", 422: "unprocessable"}.get(
        status, f"http_{status}"
    )
    return Permanent(message, field_errors=field_errors, code=code, **common)


def classify_transport_error(exc: httpx.TransportError, *, operation: str, write: bool) -> ProviderError:
    """Classify a request that got no answer: did it possibly reach the provider?"""
    kind = type(exc).__name__
    if isinstance(exc, _NEVER_SENT):
        return Retryable(f"{operation}: no connection to ServiceTitan ({kind})", code="connection_failed")
    timed_out = isinstance(exc, httpx.TimeoutException)
    code = "timeout" if timed_out else "connection_lost"
    what = "timed out" if timed_out else "lost the connection"
    if write:
        return UnknownOutcome(f"{operation}: {what} after sending ({kind}); the write may have happened", code=code)
    return Retryable(f"{operation}: {what} ({kind})", code=code)
