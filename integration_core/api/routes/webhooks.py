"""Provider webhooks: `POST /webhooks/servicetitan`, `/webhooks/housecallpro`, `/webhooks/generic`.

Not behind the API token: the signature over the raw body is the authentication (docs/webhooks.md). Store, then
acknowledge: a verified event is in the inbox (one statement, one transaction) before the 2xx goes out; a
duplicate is acknowledged without storing anything. Refused calls (401) are counted without their body. A
database that cannot be reached answers 503 with Retry-After, so the provider delivers again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from integration_core.crypto import SecretDecryptionError
from integration_core.db.engine import session_scope
from integration_core.settings import Settings
from integration_core.webhooks import endpoints, events, inbox
from integration_core.webhooks.signing import SignatureError, SigningConfig, verify

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

GENERIC_HEADER = endpoints.DEFAULTS["generic"].signature_header
_CONNECTION = Query(
    None,
    description="the provider connection's id (register the URL with it: `/webhooks/servicetitan?connection=<id>`)",
)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "stored (or a duplicate of a stored event): the provider may forget it"},
    400: {"description": "the body is not JSON (after a valid signature)"},
    401: {"description": "missing or wrong signature, unknown connection: counted, body not kept"},
    413: {"description": "body larger than WEBHOOK_MAX_BODY_BYTES"},
    422: {"description": "JSON, but not the provider's event shape (field named)"},
    503: {"description": "database unavailable: nothing stored, deliver again later"},
}


class _Refused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(413, "too_large", f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, "too_large", f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _connection_id(raw: str | None) -> uuid.UUID | None:
    if not raw:
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        return None


def _load_endpoint(engine: Engine, connection_id: uuid.UUID, secret_key: str) -> endpoints.Endpoint | None:
    with session_scope(engine) as session:
        return endpoints.load(session, connection_id, secret_key)


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "malformed", "body is not valid JSON") from None


def _canonical_signature_ok(payload: dict[str, Any], secret: str) -> bool:
    """The generic payload's own `signature` field: HMAC-SHA256 (hex) of the payload without that field, as
    compact JSON with sorted keys (for senders that cannot set a header)."""
    given = payload.get("signature")
    if not isinstance(given, str) or not given:
        return False
    rest = {k: v for k, v in payload.items() if k != "signature"}
    message = json.dumps(rest, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


async def _count(engine: Engine, provider: str, connection_key: str, reason: str) -> None:
    try:
        await run_in_threadpool(
            inbox.record_rejection, engine, provider=provider, connection_key=connection_key, reason=reason
        )
    except (OperationalError, InterfaceError, DBAPIError):
        log.warning("webhook rejection not counted: database unavailable")


def _answer(status: int, detail: Any, **extra: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=extra or None)


async def _receive(request: Request, provider: str, connection: str | None) -> JSONResponse:
    engine, settings = _engine(request), _settings(request)
    connection_id = _connection_id(connection)
    known_key = ""
    try:
        body = await _read_body(request, settings.webhook_max_body_bytes)
        endpoint: endpoints.Endpoint | None = None
        if connection_id is not None:
            try:
                endpoint = await run_in_threadpool(
                    _load_endpoint, engine, connection_id, settings.secret_key.get_secret_value()
                )
            except SecretDecryptionError:
                log.error("webhook secret of connection %s cannot be decrypted with SECRET_KEY", connection_id)
                raise _Refused(401, "secret_unreadable", "webhook signature cannot be checked") from None
            if endpoint is not None:
                known_key = str(connection_id)
        if provider != "generic" and (endpoint is None or endpoint.provider != provider or not endpoint.enabled):
            raise _Refused(401, "unknown_connection", "unknown connection or no webhook configured for it")
        payload: Any = None
        if provider == "generic" and endpoint is None:
            if connection_id is not None:
                raise _Refused(401, "unknown_connection", "unknown connection or no webhook configured for it")
            secret = settings.webhook_generic_secret
            if secret is None:
                raise _Refused(401, "not_configured", "WEBHOOK_GENERIC_SECRET is not set: generic webhooks refused")
            signing = SigningConfig(secret=secret.get_secret_value(), header=GENERIC_HEADER)
        else:
            assert endpoint is not None
            signing = endpoint.signing
        signature = request.headers.get(signing.header)
        if provider == "generic" and not signature:
            # the old system's payload carries its own `signature` field
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise _Refused(401, "missing_signature", f"missing signature header {signing.header}") from None
            if not isinstance(payload, dict) or not _canonical_signature_ok(payload, signing.secret):
                raise _Refused(401, "bad_signature", "missing or wrong signature")
        else:
            timestamp = request.headers.get(signing.timestamp_header) if signing.timestamp_header else None
            try:
                verify(signing, body, signature, timestamp)
            except SignatureError as exc:
                raise _Refused(401, exc.reason, exc.message) from None
        if payload is None:
            payload = _parse(body)
        try:
            info = events.describe(provider, payload)
        except events.PayloadError as exc:
            await _count(engine, provider, known_key, "invalid_payload")
            return _answer(422, [{"loc": ["body", *exc.field.split(".")], "msg": exc.message, "type": "value_error"}])
        stored = await run_in_threadpool(
            inbox.store,
            engine,
            provider=provider,
            connection_id=endpoint.connection_id if endpoint else None,
            company_id=endpoint.company_id if endpoint else None,
            body=body,
            payload=payload,
            info=info,
        )
    except _Refused as exc:
        await _count(engine, provider, known_key, exc.reason)
        headers = {"WWW-Authenticate": "Signature"} if exc.status == 401 else {}
        return _answer(exc.status, exc.detail, **headers)
    except (OperationalError, InterfaceError):
        log.error("webhook not stored: database unavailable")
        return _answer(503, "database unavailable, deliver again later", **{"Retry-After": "5"})
    except DBAPIError as exc:
        log.warning("webhook refused by the database: %s", type(exc.orig).__name__)
        await _count(engine, provider, known_key, "refused_by_db")
        return JSONResponse({"detail": "the event cannot be stored (invalid content)"}, status_code=400)
    if stored.duplicate:
        return JSONResponse({"status": "duplicate"}, status_code=200)
    return JSONResponse({"status": "stored", "id": stored.event_id}, status_code=200)


@router.post("/servicetitan", responses=_RESPONSES)
async def servicetitan(request: Request, connection: str | None = _CONNECTION) -> JSONResponse:
    """A ServiceTitan webhook (v2 subscription) for one connection: stored, then applied by the webhook sensor."""
    return await _receive(request, "servicetitan", connection)


@router.post("/housecallpro", responses=_RESPONSES)
async def housecallpro(request: Request, connection: str | None = _CONNECTION) -> JSONResponse:
    """A Housecall Pro webhook subscription event for one connection."""
    return await _receive(request, "housecallpro", connection)


@router.post("/generic", responses=_RESPONSES)
async def generic(request: Request, connection: str | None = _CONNECTION) -> JSONResponse:
    """The old system's documented payload (`provider`, `event_type`, `external_id`, `data`, `timestamp`,
    `signature`), signed with WEBHOOK_GENERIC_SECRET (or with a connection's webhook secret via `?connection=`)."""
    return await _receive(request, "generic", connection)
