"""The one place where Housecall Pro answers become :mod:`integration_core.providers.base` errors.

:func:`classify_response` handles every non-2xx answer; :func:`classify_transport_error` handles requests that
got no answer. The rules (the same as ServiceTitan's, see the table in ``base.py`` and ``docs/housecallpro.md``):

- 429 → ``RateLimited``: the ``Retry-After`` header (seconds or HTTP date) when given; otherwise an exponential
  backoff (1, 2, 4 … 60 s) over the client's consecutive unexplained 429s (Housecall Pro documents no limits and
  may not say how long to wait).
- 401 and 403 → ``AuthFailed`` (an API key is not refreshed: a rejected key stays rejected; 403 is also what a
  company off the MAX plan gets).
- 5xx and 408 → ``Retryable`` for reads; ``UnknownOutcome`` for writes (the record may have been committed
  before the failure).
- Other 4xx → ``Permanent`` (400/404/409/422) with the message of Housecall Pro's ``ErrorResponse``
  (``{"error": {"message": …}}``) and any field errors it carries.
- No answer: never connected (connect error/timeout, pool timeout) → ``Retryable``; a timeout or lost
  connection after sending → ``UnknownOutcome`` for writes, ``Retryable`` for reads.

Messages are redacted (``sensitive`` values: homeowner data, the API key; e-mails and phone numbers always).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from integration_core.providers import http
from integration_core.providers.base import ProviderError, RateLimited, redact

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "backoff_after",
    "classify_response",
    "classify_transport_error",
    "parse_retry_after",
]

BACKOFF_BASE = 1.0
"""Seconds to wait after the first 429 that names no wait."""
BACKOFF_CAP = 60.0
"""Longest wait after consecutive 429s that name no wait."""

_MAX_MESSAGE = http.MAX_MESSAGE


def backoff_after(unexplained_429s: int) -> float:
    """Wait after the ``n``-th consecutive 429 without ``Retry-After`` (n ≥ 1): 1, 2, 4, … capped at 60 s."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, unexplained_429s - 1)))


parse_retry_after = http.retry_after_header


def _message(body: Mapping[str, Any], response: httpx.Response) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip()
    if isinstance(error, str) and error.strip():
        return error.strip()
    for key in ("message", "title", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return response.reason_phrase or f"HTTP {response.status_code}"


def _field_errors(body: Mapping[str, Any]) -> dict[str, list[str]]:
    """Field errors where an answer carries them (``errors`` or ``error.errors`` as a name → message(s) map)."""
    candidates = [body.get("errors")]
    if isinstance(body.get("error"), dict):
        candidates.append(body["error"].get("errors"))
    for errors in candidates:
        result = http.field_error_map(errors)
        if result is not None:
            return result
    return {}


def classify_response(
    response: httpx.Response,
    *,
    operation: str,
    write: bool,
    sensitive: Iterable[str] = (),
    unexplained_429s: int = 1,
) -> ProviderError:
    """Classify a non-2xx Housecall Pro answer.

    Args:
        response: the answer (its body already read).
        operation: what was attempted (``create_lead``), used in the message.
        write: whether the request could have changed state at Housecall Pro (anything but GET/HEAD).
        sensitive: values that must not appear in the message (homeowner data, the API key).
        unexplained_429s: for a 429 without ``Retry-After``: how many such 429s in a row, this one included.
    """
    status = response.status_code
    body = http.json_body(response)
    sensitive = list(sensitive)
    text = redact(_message(body, response), sensitive)[:_MAX_MESSAGE]
    trace_id = response.headers.get("x-request-id") or response.headers.get("x-trace-id")
    common: dict[str, Any] = {"http_status": status, "trace_id": trace_id}
    message = f"{operation}: {text}"

    if status == 429:
        retry_after = parse_retry_after(response.headers)
        if retry_after is None:
            return RateLimited(
                message, retry_after=backoff_after(unexplained_429s), code="rate_limited_backoff", **common
            )
        return RateLimited(message, retry_after=retry_after, **common)
    return http.classify_status(
        status, message=message, write=write, field_errors=_field_errors(body), sensitive=sensitive, common=common
    )


def classify_transport_error(exc: httpx.TransportError, *, operation: str, write: bool) -> ProviderError:
    """Classify a request that got no answer: could it have reached Housecall Pro?"""
    return http.classify_transport_error(exc, operation=operation, write=write, provider="Housecall Pro")
