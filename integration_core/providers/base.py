"""The provider boundary: what the delivery engine sees of any field-service system.

Everything a provider can go wrong with is classified *here*, once, into five exception classes the state
machine understands (docs/architecture.md):

========================  ==========================================================  ==========================
class                     meaning                                                     routing goes to
========================  ==========================================================  ==========================
:class:`RateLimited`      throttled (429); ``retry_after`` seconds from the provider  ``pending`` after the wait
:class:`Retryable`        transient and *nothing was written* (GET 5xx/timeout,       ``pending`` (+backoff)
                          connection refused, token endpoint down)
:class:`AuthFailed`       credentials rejected (401 after one refresh, 403,           tenant paused, no attempt
                          ``invalid_client``)                                         burnt
:class:`Permanent`        the provider refused this record or the connection is       ``failed``
                          mis-configured (400/404/409/422); ``field_errors``
:class:`UnknownOutcome`   a write may have reached the provider (5xx, timeout or      ``needs_reconcile``
                          dropped connection after the request was sent)
========================  ==========================================================  ==========================

Messages are safe to store and show: they never carry credentials, tokens or homeowner data. Providers pass the
values they consider sensitive to :func:`redact`; on top of that every message is scrubbed of e-mail addresses
and phone-number-like digit runs, so a provider echoing a field value back cannot leak it.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from integration_core.domain import DeliveryMode  # the one definition (domain.py); re-exported here

__all__ = [
    "AuthFailed",
    "Capabilities",
    "ConnectionSettings",
    "DeliveryMode",
    "DeliveryPlan",
    "DeliveryRequest",
    "DeliveryResult",
    "Environment",
    "ExternalStatus",
    "ExternalUpdate",
    "Permanent",
    "PlannedRequest",
    "Provider",
    "ProviderError",
    "RateLimited",
    "RequestGate",
    "Retryable",
    "UnknownOutcome",
    "UpdatesBatch",
    "WorkItemKind",
    "base_url_problem",
    "burst_problem",
    "rate_problem",
    "redact",
    "secret_problem",
]

Environment = Literal["production", "integration", "sandbox"]
WorkItemKind = Literal["booking", "job", "lead"]
ExternalStatus = Literal[
    "new",
    "accepted",
    "dismissed",
    "converted",
    "scheduled",
    "dispatched",
    "in_progress",
    "hold",
    "completed",
    "canceled",
]
FINAL_EXTERNAL_STATUSES: frozenset[str] = frozenset({"completed", "canceled", "dismissed"})

# --------------------------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------------------------

REDACTED = "[redacted]"
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# 10+ digits, optionally separated by spaces, dots, dashes or parentheses: phone numbers (dates and the
# provider's record ids are shorter, so messages stay readable).
_PHONE = re.compile(r"\+?\(?\d(?:[\s().-]*\d){9,}")
_BEARER = re.compile(r"(?i)bearer\s+[\w.~+/=-]+")


def redact(text: str, sensitive: Iterable[str] = ()) -> str:
    """Return ``text`` with every ``sensitive`` value, e-mail address, phone-like number and bearer token masked.

    Sensitive values shorter than 3 characters are ignored (masking "TX" everywhere would make messages
    unreadable and protect nothing).
    """
    for value in sorted({v.strip() for v in sensitive if v and len(v.strip()) >= 3}, key=len, reverse=True):
        text = re.sub(re.escape(value), REDACTED, text, flags=re.IGNORECASE)
    text = _BEARER.sub(REDACTED, text)
    text = _EMAIL.sub(REDACTED, text)
    return _PHONE.sub(REDACTED, text)


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------


class ProviderError(Exception):
    """Base of every classified provider error.

    Attributes:
        code: a short machine-readable reason (``rate_limited``, ``validation_error``, ``timeout`` ...).
        message: a safe, human-readable message (no secrets, no homeowner data).
        http_status: the provider's HTTP status, if a response was received.
        trace_id: the provider's trace id, for support tickets.
    """

    default_code: ClassVar[str] = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        trace_id: str | None = None,
    ) -> None:
        self.message = redact(message)
        self.code = code or self.default_code
        self.http_status = http_status
        self.trace_id = trace_id or None
        super().__init__(self.message)

    def __str__(self) -> str:
        status = f" (HTTP {self.http_status})" if self.http_status is not None else ""
        return f"{self.code}{status}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, http_status={self.http_status!r}, "
            f"trace_id={self.trace_id!r}, message={self.message!r})"
        )


class RateLimited(ProviderError):
    """Throttled by the provider; wait ``retry_after`` seconds (the provider's own figure) before the next call."""

    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = max(0.0, float(retry_after))

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, retry_after={self.retry_after!r})"


class Retryable(ProviderError):
    """Transient failure with nothing written at the provider: safe to send again after a backoff."""

    default_code = "retryable"


class AuthFailed(ProviderError):
    """The provider rejected the connection's credentials or their scope: pause the tenant, burn no attempts."""

    default_code = "auth_failed"


class Permanent(ProviderError):
    """The provider refused this record (or the connection is mis-configured); sending it again will not help.

    ``field_errors`` maps the provider's field names to its messages (redacted), e.g.
    ``{"CampaignId": ["The CampaignId field is required."]}``.
    """

    default_code = "permanent"

    def __init__(self, message: str, *, field_errors: Mapping[str, Iterable[str]] | None = None, **kwargs: Any):
        self.field_errors: dict[str, list[str]] = {
            redact(str(name)): [redact(str(m)) for m in messages] for name, messages in (field_errors or {}).items()
        }
        super().__init__(message, **kwargs)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, field_errors={self.field_errors!r})"


class UnknownOutcome(ProviderError):
    """A write may or may not have taken effect: look the record up by its marker before sending it again."""

    default_code = "unknown_outcome"


# --------------------------------------------------------------------------------------------------------------
# DTOs
# --------------------------------------------------------------------------------------------------------------


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
MAX_SECRET_LENGTH = 4096
MIN_RATE_PER_SECOND, MAX_RATE_PER_SECOND = 0.1, 100.0
MAX_RATE_BURST = 100


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url_problem(url: str, environment: str | None, hosts: Mapping[str, Iterable[str]]) -> str | None:
    """Why `url` may not be a connection's base URL (None when it may): outside the sandbox environment only the
    provider's own `hosts` over https; in the sandbox environment only loopback (so `/connection/test` cannot
    probe other hosts)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "must be an http(s) URL"
    if parts.scheme not in ("http", "https") or not host or _CONTROL.search(url) or " " in url:
        return "must be an http(s) URL"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "must not carry credentials, a query or a fragment"
    if environment == "sandbox":
        return None if _is_loopback(host) else "the sandbox environment only reaches a sandbox on loopback"
    allowed = tuple(hosts.get(environment or "", ()))
    if parts.scheme != "https" or host.lower() not in allowed:
        hosts_text = ", ".join(allowed) or "none"
        return f"{environment} connections only reach the provider's own hosts over https ({hosts_text})"
    return None


def secret_problem(secret: str) -> str | None:
    if not secret.strip():
        return "must not be empty"
    if len(secret) > MAX_SECRET_LENGTH:
        return f"must be at most {MAX_SECRET_LENGTH} characters"
    if _CONTROL.search(secret):
        return "must not contain control characters"
    return None


def rate_problem(rate: float) -> str | None:
    if not MIN_RATE_PER_SECOND <= rate <= MAX_RATE_PER_SECOND:
        return f"must be between {MIN_RATE_PER_SECOND:g} and {MAX_RATE_PER_SECOND:g} requests per second"
    return None


def burst_problem(burst: int) -> str | None:
    return None if 1 <= burst <= MAX_RATE_BURST else f"must be between 1 and {MAX_RATE_BURST}"


def _stored(info: ValidationInfo) -> bool:
    """Validating a stored connection (`connection_config(row)`), not operator input: rows written before the
    input bounds existed must still load, so the input-only rules are skipped."""
    return bool(info.context and info.context.get("stored"))


class ConnectionSettings(BaseModel):
    """One company's connection to its field-service system: the provider-neutral part a provider's connection
    model may subclass (`providers/<name>/config.py`, registered in `providers/registry.py`).

    Secrets are `SecretStr` fields: stored encrypted (one ciphertext per field), never returned. As operator
    input (API, CLI) the model enforces what `registry.input_problems` checks for every provider: `base_url`
    on the provider's own hosts (loopback in the sandbox environment), rates within 0.1..100 per second, bursts
    within 1..100, secrets of at most 4096 characters without control characters; and the settings the delivery
    mode needs (when `ENFORCE_MODE_SETTINGS`: the API's body models). Validated with ``context={"stored": True}``
    (a stored row) only the shape is checked, so a half-configured connection can still be loaded, shown and
    checked (:meth:`missing_settings`).
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True, extra="forbid", validate_default=True)

    PROVIDER_HOSTS: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """environment → the provider's own API hosts a `base_url` may name (sandbox: loopback only)."""
    REQUIRED_BY_MODE: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """delivery_mode → the settings it needs."""
    REQUESTS_PER_DELIVERY: ClassVar[Mapping[str, int]] = {}
    """delivery_mode → the requests one delivery sends at most: its plan without a lookup (`plan_delivery`; a test
    holds the two together). The run queue's estimate of a run's length (`delivery/scheduling.py`); 1 if absent."""
    ENFORCE_MODE_SETTINGS: ClassVar[bool] = False
    """Refuse a connection lacking what its delivery mode needs (operator input: the API's body models set it);
    otherwise the lack is reported by `missing_settings` and the provider refuses to deliver."""

    provider: str
    environment: Environment = "sandbox"
    base_url: str | None = Field(None, max_length=500)
    delivery_mode: str  # a DeliveryMode value (domain.py); each provider narrows it to the modes it supports
    rate_limit_per_second: float = Field(60.0, gt=0)
    rate_limit_burst: int = Field(10, ge=1)

    @field_validator("base_url", mode="before")
    @classmethod
    def _strip_url(cls, v: Any) -> Any:
        return (v.strip() or None) if isinstance(v, str) else v

    @field_validator("*", mode="after")
    @classmethod
    def _field_rules(cls, v: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        problem: str | None = None
        if name == "base_url":
            environment = info.data.get("environment")
            if environment == "sandbox" and not v:
                problem = "required for the sandbox environment"
            elif v and not _stored(info):
                problem = base_url_problem(v, environment, cls.PROVIDER_HOSTS)
        elif _stored(info):
            return v
        elif name == "rate_limit_per_second":
            problem = rate_problem(v)
        elif name == "rate_limit_burst":
            problem = burst_problem(v)
        elif isinstance(v, SecretStr):
            problem = secret_problem(v.get_secret_value())
        elif isinstance(v, str) and _CONTROL.search(v):
            problem = "must not contain control characters"
        else:
            mode = info.data.get("delivery_mode")
            required = cls.REQUIRED_BY_MODE.get(mode, ()) if isinstance(mode, str) else ()
            if v is None and cls.ENFORCE_MODE_SETTINGS and name in required:
                problem = f"required for delivery_mode={mode}"
        if problem:
            raise ValueError(problem)
        return v

    def missing_settings(self) -> dict[str, list[str]]:
        """Settings the configured delivery mode needs but lacks, as field errors (empty when complete)."""
        return {
            name: [f"required for delivery_mode={self.delivery_mode}"]
            for name in self.REQUIRED_BY_MODE.get(self.delivery_mode, ())
            if getattr(self, name) is None
        }

    def __repr_args__(self) -> Any:
        # client ids and account handles identify an app registration: keep them out of reprs beside the secrets
        for name, value in super().__repr_args__():
            yield name, ("***" if isinstance(value, SecretStr) else value)


@dataclass(frozen=True)
class PlannedRequest:
    """One request a delivery would send, as the provider renders it for a dry run (credentials shown as
    ``[redacted]``; ids known only at run time shown as placeholders)."""

    operation: str
    method: str
    url: str
    when: str
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeliveryPlan:
    """The requests one delivery would send, in order, and what each placeholder in them stands for."""

    requests: list[PlannedRequest]
    placeholders: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryRequest:
    """One routing to deliver. ``routing_id`` is the marker stamped on every record created for it.

    Homeowner fields are excluded from ``repr`` so logging a request cannot leak them.
    """

    routing_id: uuid.UUID
    summary: str = field(repr=False)
    street: str = field(repr=False)
    city: str = field(repr=False)
    state: str = field(repr=False)
    zip: str = field(repr=False)
    homeowner_name: str = field(repr=False)
    created_at: datetime
    unit: str | None = field(default=None, repr=False)
    country: str = field(default="USA", repr=False)
    homeowner_phone: str | None = field(default=None, repr=False)
    homeowner_email: str | None = field(default=None, repr=False)
    category: str | None = None
    referring_company_name: str | None = None

    @property
    def marker(self) -> str:
        return str(self.routing_id)

    def sensitive_values(self) -> list[str]:
        """Values that must never appear in a message, log line or run metadata."""
        values = [self.homeowner_name, self.street, self.summary]
        values += [v for v in (self.unit, self.homeowner_phone, self.homeowner_email) if v]
        if self.homeowner_phone:
            values.append(re.sub(r"\D", "", self.homeowner_phone))
        return values


@dataclass(frozen=True)
class DeliveryResult:
    """The provider record for a routing.

    Attributes:
        external_id: the id of the record the routing *is* (booking id in booking mode, job id in job mode).
        kind: which kind of record ``external_id`` names.
        refs: every id worth keeping (``booking_id``; or ``customer_id``/``location_id``/``job_id``/``job_number``).
        adopted: True when the record was found at the provider (created by an earlier attempt), not created now.
    """

    external_id: str
    kind: WorkItemKind
    refs: dict[str, int | str]
    adopted: bool = False


@dataclass(frozen=True)
class ExternalUpdate:
    """A change observed at the provider for a record we delivered.

    The engine matches an update to its routing by ``marker`` when set, else by (``kind``, ``external_id``) within
    the connection, and ignores updates that match no routing (the provider lists every changed record).

    Attributes:
        kind: kind of the record the routing delivered (a job converted from our booking reports ``booking``).
        external_id: id of that record (the booking id for a converted booking's job).
        external_status: our status vocabulary (``ExternalStatus``).
        completed_at: when the provider completed the work, if it did.
        revenue: invoiced total of the completed work, if known.
        modified_on: the provider's modification time of the record this update was read from.
        refs: further ids learned (e.g. ``job_id`` once a booking is converted).
        source: the record the status was read from, when not ``kind``. A booking's own status (``converted``)
            must not overwrite a status read from the job it was converted to (``scheduled`` … ``completed``).
    """

    kind: WorkItemKind
    external_id: str
    external_status: ExternalStatus
    modified_on: datetime
    marker: uuid.UUID | None = None
    completed_at: datetime | None = None
    revenue: Decimal | None = None
    refs: dict[str, int | str] = field(default_factory=dict)
    source: WorkItemKind | None = None

    @property
    def read_from(self) -> WorkItemKind:
        """The record the status was read from (``source``, defaulting to ``kind``)."""
        return self.source or self.kind

    @property
    def is_final(self) -> bool:
        return self.external_status in FINAL_EXTERNAL_STATUSES


@dataclass(frozen=True)
class UpdatesBatch:
    """Updates since a cursor, and the cursor to pass next time (persist it only after applying the updates)."""

    updates: list[ExternalUpdate]
    cursor: datetime


@dataclass(frozen=True)
class Capabilities:
    """What the engine needs to know to drive a provider.

    Attributes:
        rate_per_second: the provider's documented request budget per tenant.
        rate_burst: how many requests may go out at once within that budget.
        auth_kind: how the connection authenticates.
        work_item_kind: the record one routing becomes.
        supports_lookup: whether records can be found by our marker (needed to reconcile unknown outcomes).
        requests_per_delivery: upper bound of provider calls one ``deliver`` makes (for rate budgeting).
    """

    rate_per_second: float = 60.0
    rate_burst: int = 10
    auth_kind: Literal["oauth2_client_credentials", "api_key"] = "oauth2_client_credentials"
    work_item_kind: WorkItemKind = "booking"
    supports_lookup: bool = True
    requests_per_delivery: int = 1


# --------------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------------


class RequestGate(Protocol):
    """Called before every provider API request (not token requests): the engine's shared rate budget.
    `write`: the request may create or change a record at the provider (not a read)."""

    async def acquire(self, *, write: bool = True) -> None: ...


@runtime_checkable
class Provider(Protocol):
    """A field-service system as the delivery engine drives it.

    Every method raises only :class:`ProviderError` subclasses for provider-side failures.
    """

    @property
    def capabilities(self) -> Capabilities: ...

    async def check_connection(self) -> None:
        """Prove the credentials and settings work (token + a cheap read); raise AuthFailed / Permanent otherwise."""
        ...

    async def find_existing(self, request: DeliveryRequest) -> DeliveryResult | None:
        """Look the routing's record up by its marker; ``None`` means it is safe to deliver (again)."""
        ...

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Create the routing's record at the provider (each created record carries the marker)."""
        ...

    async def fetch_updates(self, since: datetime) -> UpdatesBatch:
        """Changes to delivered records modified at or after ``since`` (all pages), plus the next cursor."""
        ...

    def plan_delivery(self, request: DeliveryRequest, *, lookup: bool, now: datetime) -> DeliveryPlan:
        """The requests :meth:`find_existing` (when ``lookup``) and :meth:`deliver` would send for ``request``,
        rendered exactly as the client serialises them, for the dry run. Sends nothing; needs no credentials."""
        ...

    async def aclose(self) -> None:
        """Release HTTP resources the provider owns."""
        ...
