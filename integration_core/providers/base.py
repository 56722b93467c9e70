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

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "AuthFailed",
    "Capabilities",
    "ConnectionConfig",
    "DeliveryMode",
    "DeliveryRequest",
    "DeliveryResult",
    "Environment",
    "ExternalStatus",
    "ExternalUpdate",
    "Permanent",
    "Priority",
    "Provider",
    "ProviderError",
    "RateLimited",
    "RequestGate",
    "Retryable",
    "UnknownOutcome",
    "UpdatesBatch",
    "WorkItemKind",
    "redact",
]

Environment = Literal["production", "integration", "sandbox"]
DeliveryMode = Literal["booking", "job"]
WorkItemKind = Literal["booking", "job"]
Priority = Literal["Low", "Normal", "High", "Urgent"]
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


def _digits_id(value: Any) -> Any:
    return str(value).strip() if isinstance(value, int | str) else value


class ConnectionConfig(BaseModel):
    """One company's connection to its field-service system (decrypted; secrets stay wrapped in SecretStr).

    Mode-specific requirements (a booking provider for ``booking``; business unit, job type, campaign and the
    external-data GUID for ``job``) are reported by :meth:`missing_settings` rather than raised on construction,
    so a half-configured connection can still be loaded, shown and health-checked.
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True, extra="forbid")

    provider: Literal["servicetitan"] = "servicetitan"
    environment: Environment = "sandbox"
    base_url: str | None = None
    tenant_id: Annotated[str, BeforeValidator(_digits_id), Field(pattern=r"^\d{1,19}$")]
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    app_key: SecretStr
    delivery_mode: DeliveryMode = "booking"
    booking_provider_id: int | None = None
    business_unit_id: int | None = None
    job_type_id: int | None = None
    campaign_id: int | None = None
    priority: Priority = "Normal"
    external_data_guid: uuid.UUID | None = None
    rate_limit_per_second: float = Field(60.0, gt=0)
    rate_limit_burst: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _sandbox_needs_url(self) -> ConnectionConfig:
        if self.environment == "sandbox" and not self.base_url:
            raise ValueError("base_url is required for the sandbox environment")
        return self

    def missing_settings(self) -> dict[str, list[str]]:
        """Settings the configured delivery mode needs but lacks, as field errors (empty when complete)."""
        required: tuple[str, ...]
        if self.delivery_mode == "booking":
            required = ("booking_provider_id",)
        else:
            required = ("business_unit_id", "job_type_id", "campaign_id", "external_data_guid")
        return {
            name: [f"required for delivery_mode={self.delivery_mode}"]
            for name in required
            if getattr(self, name) is None
        }

    def __repr_args__(self) -> Any:
        # client_id identifies the tenant's app registration; keep it out of reprs alongside the secrets.
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "client_id" else value)


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

    async def aclose(self) -> None:
        """Release HTTP resources the provider owns."""
        ...
