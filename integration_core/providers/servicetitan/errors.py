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

import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from integration_core.providers import http
from integration_core.providers.base import AuthFailed, ProviderError, RateLimited, Retryable, redact

__all__ = ["DEFAULT_RETRY_AFTER", "classify_response", "classify_transport_error", "parse_retry_after"]

DEFAULT_RETRY_AFTER = 1.0
"""Seconds to wait after a 429 that names no wait at all (ServiceTitan's window is one second)."""

_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)
_AUTH_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_grant", "invalid_scope"})
_MAX_MESSAGE = http.MAX_MESSAGE


def parse_retry_after(headers: Mapping[str, str], title: str | None, *, now: float | None = None) -> float:
    """Seconds to wait: ``Retry-After`` (delta-seconds or HTTP date), else the title's "Try again in N seconds."."""
    seconds = http.retry_after_header(headers, now=now)
    if seconds is not None:
        return seconds
    if title:
        match = _TRY_AGAIN.search(title)
        if match:
            return float(match.group(1))
    return DEFAULT_RETRY_AFTER


def _field_errors(body: Mapping[str, Any]) -> dict[str, list[str]]:
    return http.field_error_map(body.get("errors")) or {}


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
    body = http.json_body(response)
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

    return http.classify_status(
        status, message=message, write=write, field_errors=_field_errors(body), sensitive=sensitive, common=common
    )


def classify_transport_error(exc: httpx.TransportError, *, operation: str, write: bool) -> ProviderError:
    """Classify a request that got no answer: did it possibly reach the provider?"""
    return http.classify_transport_error(exc, operation=operation, write=write, provider="ServiceTitan")
