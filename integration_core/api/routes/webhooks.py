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
import threading
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from integration_core.api.deps import SessionDep, SettingsDep, require_token
from integration_core.crypto import SecretDecryptionError
from integration_core.db.engine import session_scope
from integration_core.domain import ProviderName
from integration_core.errors import InvalidInput, NotFound
from integration_core.schemas import InputModel, Text
from integration_core.settings import Settings
from integration_core.webhooks import endpoints, events, inbox
from integration_core.webhooks.apply import InboxApplier
from integration_core.webhooks.signing import SignatureError, SigningConfig, verify

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
_applier_lock = threading.Lock()

GENERIC_HEADER = endpoints.DEFAULTS["generic"].signature_header
# where /webhooks/generic may go without ?connection= (WEBHOOK_GENERIC_SECRET, shared by every company)
SHARED_SECRET_ENVIRONMENTS = ("development", "test")
_PROVIDERS = frozenset(p.value for p in ProviderName)
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


def _canonical_signed(payload: dict[str, Any], secret: str) -> bytes | None:
    """The generic payload's own `signature` field: HMAC-SHA256 (hex) of the payload without that field, as
    compact JSON with sorted keys (for senders that cannot set a header). Returns that signed message when the
    signature is valid (None otherwise): it, not the raw body, is what the sender vouched for, so it is also
    what dedup hashes (the same event re-spaced or re-ordered is a duplicate, not a new event)."""
    given = payload.get("signature")
    if not isinstance(given, str) or not given:
        return None
    rest = {k: v for k, v in payload.items() if k != "signature"}
    message = json.dumps(rest, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return message if hmac.compare_digest(given.strip().lower().encode("utf-8"), expected.encode()) else None


async def _count(engine: Engine, provider: str, connection_key: str, reason: str) -> None:
    try:
        await run_in_threadpool(
            inbox.record_rejection, engine, provider=provider, connection_key=connection_key, reason=reason
        )
    except (OperationalError, InterfaceError, DBAPIError, PoolTimeout):
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
                log.error(
                    "webhook secret of connection %s cannot be decrypted with any key of SECRET_KEY(S)", connection_id
                )
                raise _Refused(401, "secret_unreadable", "webhook signature cannot be checked") from None
            if endpoint is not None:
                known_key = str(connection_id)
        if provider != "generic" and (endpoint is None or endpoint.provider != provider or not endpoint.enabled):
            raise _Refused(401, "unknown_connection", "unknown connection or no webhook configured for it")
        payload: Any = None
        dedup_body = body  # what the dedup hash covers when the event has no id: what the signature covers
        if provider == "generic" and endpoint is None:
            if connection_id is not None:
                raise _Refused(401, "unknown_connection", "unknown connection or no webhook configured for it")
            if settings.environment not in SHARED_SECRET_ENVIRONMENTS:
                # one shared secret for every company is a development convenience: in staging and production a
                # generic sender names its connection (and signs with that connection's own secret)
                raise _Refused(401, "connection_required", "name the connection: /webhooks/generic?connection=<id>")
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
            signed = _canonical_signed(payload, signing.secret) if isinstance(payload, dict) else None
            if signed is None:
                raise _Refused(401, "bad_signature", "missing or wrong signature")
            dedup_body = signed
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
        if endpoint is None and payload.get("provider") not in _PROVIDERS:
            # no connection: the event can only ever touch routings of the provider it names (apply_update)
            await _count(engine, provider, known_key, "invalid_payload")
            message = f"must be one of {', '.join(sorted(_PROVIDERS))} without ?connection="
            return _answer(422, [{"loc": ["body", "provider"], "msg": message, "type": "value_error"}])
        stored = await run_in_threadpool(
            inbox.store,
            engine,
            provider=provider,
            connection_id=endpoint.connection_id if endpoint else None,
            company_id=endpoint.company_id if endpoint else None,
            body=dedup_body,
            payload=payload,
            info=info,
        )
    except _Refused as exc:
        await _count(engine, provider, known_key, exc.reason)
        headers = {"WWW-Authenticate": "Signature"} if exc.status == 401 else {}
        return _answer(exc.status, exc.detail, **headers)
    except (OperationalError, InterfaceError, PoolTimeout):
        log.error("webhook not stored: database unavailable")
        return _answer(503, "database unavailable, deliver again later", **{"Retry-After": "5"})
    except DBAPIError as exc:
        log.warning("webhook refused by the database: %s", type(exc.orig).__name__)
        await _count(engine, provider, known_key, "refused_by_db")
        return JSONResponse({"detail": "the event cannot be stored (invalid content)"}, status_code=400)
    if stored.duplicate:
        return JSONResponse({"status": "duplicate"}, status_code=200)
    if settings.webhook_apply_in_api:
        return JSONResponse(
            {"status": "stored", "id": stored.event_id}, status_code=200, background=BackgroundTask(_nudge, request)
        )
    return JSONResponse({"status": "stored", "id": stored.event_id}, status_code=200)


def _nudge(request: Request) -> None:
    """After the answer is out: apply in the background (the sensor applies whatever this misses)."""
    with _applier_lock:
        applier: InboxApplier | None = getattr(request.app.state, "webhook_applier", None)
        if applier is None:
            applier = request.app.state.webhook_applier = InboxApplier(_settings(request))
    applier.nudge()


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


# --- operators: the inbox in the admin API (token-protected) ------------------------------------------------

admin_router = APIRouter(prefix="/api/admin/webhooks", tags=["admin"], dependencies=[Depends(require_token)])


class WebhookEndpointIn(InputModel):
    """A connection's webhook settings. `secret` is write-only (stored encrypted, never returned)."""

    secret: str = Field(min_length=endpoints.MIN_SECRET_LENGTH, max_length=256)
    signature_header: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    signature_encoding: Literal["hex", "base64"] | None = None
    timestamp_header: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9-]*$")
    timestamp_tolerance_seconds: int | None = Field(None, ge=1, le=86_400)
    enabled: bool = True


class ReplayIn(InputModel):
    ids: list[int] | None = Field(None, max_length=10_000)
    status: Literal["unmatched", "error", "applied"] | None = None
    provider: Literal["servicetitan", "housecallpro", "generic"] | None = None


@admin_router.get("")
def inbox_summary(session: SessionDep) -> dict[str, Any]:
    """Events by provider and status, how many wait to be applied and the oldest's age, the last error, and
    the rejected calls (counted by provider, connection and reason; no body is ever kept)."""
    return inbox.summary(session.connection())


@admin_router.get("/events")
def inbox_events(
    session: SessionDep,
    provider: Annotated[Text | None, Query(max_length=32)] = None,
    status: Annotated[Literal["received", "applied", "unmatched", "error"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """The newest events (ids, type, record, times, status, attempts, last error; never the payload)."""
    return inbox.list_events(session.connection(), provider=provider, status=status, limit=limit)


@admin_router.post("/replay")
def inbox_replay(body: ReplayIn, session: SessionDep, request: Request, background: BackgroundTasks) -> dict[str, int]:
    """Queue events again (by id, or every event in a status); the API's applier and the sensor apply them."""
    if not body.ids and body.status is None:
        raise InvalidInput.field(("body", "ids"), "name event ids or a status")
    n = inbox.replay(session.connection(), ids=body.ids, status=body.status, provider=body.provider)
    if n and _settings(request).webhook_apply_in_api:
        background.add_task(_nudge, request)  # after the answer: the replay is committed by then
    return {"queued": n}


@admin_router.get("/endpoints/{connection_id}")
def get_endpoint(connection_id: uuid.UUID, session: SessionDep) -> dict[str, Any]:
    """A connection's webhook settings (the secret never: only whether one is set)."""
    from integration_core.db.models import WebhookEndpoint

    row = session.get(WebhookEndpoint, connection_id)
    if row is None:
        raise NotFound("webhook endpoint of connection", connection_id)
    return endpoints.describe(row)


@admin_router.put("/endpoints/{connection_id}")
def put_endpoint(
    connection_id: uuid.UUID, body: WebhookEndpointIn, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Set a connection's webhook settings and secret (provider defaults for what is not given). Audit-logged
    without the secret. Register `/webhooks/<provider>?connection=<connection_id>` with the provider."""
    row = endpoints.configure(
        session,
        connection_id,
        secret=body.secret,
        secret_key=settings.secret_key.get_secret_value(),
        signature_header=body.signature_header,
        signature_encoding=body.signature_encoding,
        timestamp_header=body.timestamp_header,
        timestamp_tolerance_seconds=body.timestamp_tolerance_seconds,
        enabled=body.enabled,
    )
    return endpoints.describe(row)
