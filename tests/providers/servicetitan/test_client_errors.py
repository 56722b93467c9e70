"""The one classification of ServiceTitan answers (pure: built httpx responses, no server)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from integration_core.providers.base import (
    AuthFailed,
    Permanent,
    ProviderError,
    RateLimited,
    Retryable,
    UnknownOutcome,
    redact,
)
from integration_core.providers.servicetitan.errors import (
    DEFAULT_RETRY_AFTER,
    classify_response,
    classify_transport_error,
    parse_retry_after,
)

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers=headers or {})


def api_error(status: int, title: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "traceId": TRACE,
        "errors": errors or {},
        "data": {},
    }


@pytest.mark.parametrize("write", [True, False])
def test_429_is_rate_limited_with_the_servers_retry_after(write: bool) -> None:
    response = answer(429, api_error(429, "Rate limit is exceeded. Try again in 26 seconds."), {"Retry-After": "7"})
    error = classify_response(response, operation="create_booking", write=write)
    assert isinstance(error, RateLimited)
    assert error.retry_after == 7.0  # the header wins over the title
    assert (error.http_status, error.trace_id, error.code) == (429, TRACE, "rate_limited")


def test_429_falls_back_to_the_title_then_to_a_default() -> None:
    titled = answer(429, api_error(429, "Rate limit is exceeded. Try again in 26 seconds."))
    error = classify_response(titled, operation="list_jobs", write=False)
    assert isinstance(error, RateLimited) and error.retry_after == 26.0

    bare = classify_response(answer(429), operation="list_jobs", write=False)
    assert isinstance(bare, RateLimited) and bare.retry_after == DEFAULT_RETRY_AFTER


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, None, now=1445412480.0) == 10.0


@pytest.mark.parametrize(
    ("status", "write", "cls"),
    [
        (500, True, UnknownOutcome),
        (502, True, UnknownOutcome),
        (503, False, Retryable),
        (504, False, Retryable),
        (408, False, Retryable),
    ],
)
def test_5xx_is_unknown_on_writes_and_retryable_on_reads(status: int, write: bool, cls: type[ProviderError]) -> None:
    error = classify_response(
        answer(status, api_error(status, "An unexpected error occurred.")), operation="x", write=write
    )
    assert type(error) is cls
    assert error.http_status == status


@pytest.mark.parametrize(("status", "code"), [(401, "unauthorized"), (403, "forbidden")])
def test_401_and_403_are_auth_failures(status: int, code: str) -> None:
    error = classify_response(answer(status, api_error(status, "Forbidden")), operation="list_jobs", write=False)
    assert isinstance(error, AuthFailed) and error.code == code


@pytest.mark.parametrize(
    ("status", "code"), [(400, "validation_error"), (404, "not_found"), (409, "conflict"), (422, "unprocessable")]
)
def test_other_4xx_on_writes_are_permanent_with_field_errors(status: int, code: str) -> None:
    body = api_error(
        status, "One or more validation errors occurred.", {"CampaignId": ["The CampaignId field is required."]}
    )
    error = classify_response(answer(status, body), operation="create_job", write=True)
    assert isinstance(error, Permanent)
    assert error.code == code
    assert error.field_errors == {"CampaignId": ["The CampaignId field is required."]}
    assert "One or more validation errors occurred." in error.message
    assert "CampaignId: The CampaignId field is required." in error.message


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (400, {"error": "invalid_client"}, AuthFailed, "invalid_client"),
        (400, {"error": "invalid_grant", "error_description": "bad"}, AuthFailed, "invalid_grant"),
        (401, {"error": "invalid_token"}, AuthFailed, "token_rejected"),
        (503, None, Retryable, "token_endpoint_unavailable"),
        (429, None, RateLimited, "rate_limited"),
    ],
)
def test_token_endpoint_answers(status: int, body: Any, cls: type[ProviderError], code: str) -> None:
    error = classify_response(answer(status, body), operation="get_token", write=False, token_endpoint=True)
    assert type(error) is cls and error.code == code


def test_transport_errors_before_sending_are_retryable_even_for_writes() -> None:
    for exc in (httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")):
        error = classify_transport_error(exc, operation="create_booking", write=True)
        assert isinstance(error, Retryable) and error.code == "connection_failed"


def test_transport_errors_after_sending_are_unknown_for_writes_only() -> None:
    for exc in (httpx.ReadTimeout("read"), httpx.WriteTimeout("write")):
        assert isinstance(classify_transport_error(exc, operation="create_job", write=True), UnknownOutcome)
        assert isinstance(classify_transport_error(exc, operation="list_jobs", write=False), Retryable)
    dropped = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert classify_transport_error(dropped, operation="create_job", write=True).code == "connection_lost"


def test_messages_never_carry_echoed_homeowner_data_or_secrets() -> None:
    body = api_error(
        400,
        "Customer Jane Doe at 1 Main St (jane@example.com, 512-555-0100) is invalid; key ak1.secretkey",
        {"Contacts[0].Value": ["'(512) 555-0100' is not a valid phone for Jane Doe"]},
    )
    error = classify_response(
        answer(400, body), operation="create_customer", write=True, sensitive=["Jane Doe", "1 Main St", "ak1.secretkey"]
    )
    assert isinstance(error, Permanent)
    for text in (str(error), repr(error), error.message, repr(error.field_errors)):
        for leaked in ("Jane", "Main St", "jane@example.com", "555-0100", "secretkey"):
            assert leaked not in text, (leaked, text)


def test_redact_masks_bearer_tokens_emails_and_phone_numbers_but_keeps_ids_and_dates() -> None:
    text = "Bearer eyJhbGciOi.abc.def job 12345678 on 2026-01-05 call +1 (512) 555-0100 or a.b@c.io"
    assert redact(text) == "[redacted] job 12345678 on 2026-01-05 call [redacted] or [redacted]"
