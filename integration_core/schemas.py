"""Input and output shapes shared by the HTTP API, the CLI and the core (pydantic).

Every request body derives from `InputModel`: unknown fields are refused, and no string anywhere in the body
(field, list item, dict key, secret) may hold a NUL character, nor may an integer leave PostgreSQL's bigint
range — both would otherwise reach the database and come back as a refusal instead of a 422 naming the field.
Single-line text (names, addresses, skills) also refuses control characters (`Line`); phones need enough
digits (`Phone`); skills are normalised at input (`SkillName`, the matcher's `normalize_skill`), so "a b" and
"a-b" are one skill. docs/security.md lists these rules.
"""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    EmailStr,
    Field,
    RootModel,
    SecretStr,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from integration_core.db.budget import ConnectionBudget
from integration_core.db.models import SkillLevel
from integration_core.domain import ProviderName
from integration_core.providers import registry
from integration_core.referrals.matching import normalize_skill

# PostgreSQL's integer ranges: a value outside them is refused at validation, never sent to the database
BIGINT_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
# E.164 allows at most 15 digits; 7 is the shortest local number a technician or homeowner is reached at
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 15


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _single_line(value: str) -> str:
    """No control character at all (C0, DEL, C1: tabs and line breaks included) in one-line text."""
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain control characters (line breaks, tabs, NUL, …)")
    return value


def _reject_unstorable(value: Any) -> None:
    """Walk raw input: NUL in any string (dict keys included) or an integer outside bigint is refused."""
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not -BIGINT_MAX - 1 <= value <= BIGINT_MAX:
            raise ValueError(f"must be between {-BIGINT_MAX - 1} and {BIGINT_MAX}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _reject_unstorable(k)
            _reject_unstorable(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _reject_unstorable(v)
    elif isinstance(value, SecretStr):
        _no_nul(value.get_secret_value())


class InputModel(BaseModel):
    """Base of every request body: extra fields refused, nothing the database cannot store (see the module doc).
    The check runs on each field's raw value, so the 422 names the field."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        _reject_unstorable(value)
        return value


def _phone(value: str) -> str:
    number = value.lower().split("x", 1)[0]  # an extension after "x" does not count
    digits = sum(c.isdigit() for c in number)
    if not PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS:
        raise ValueError(f"a phone number needs {PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} digits")
    return value


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


def _valid_timezone(v: str) -> str:
    """An IANA zone name from the installed database (never a path: "America" is a directory, not a zone)."""
    if v not in _time_zones():
        raise ValueError(f"unknown time zone {v[:64]!r}")
    return v


def _skill(value: str) -> str:
    normalised = normalize_skill(value)
    if not normalised:
        raise ValueError("a skill needs a letter or digit")
    return normalised


# Any incoming string (query parameters included): NUL-free. `Line`: one line, no control characters.
Text = Annotated[str, AfterValidator(_no_nul)]
Line = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_single_line)]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_single_line)]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), AfterValidator(_single_line)
]
ZipCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{5}(-\d{4})?$")]
StateCode = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{2}$")]
Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=7, max_length=32, pattern=r"^[0-9+().\- x]+$"),
    AfterValidator(_phone),
]
SkillName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_single_line),
    AfterValidator(_skill),
]
TimeZone = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), AfterValidator(_valid_timezone)
]
Trade = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100), AfterValidator(_single_line)]
# ids of records in a provider's system, stored as bigint
ProviderId = Annotated[int, Field(gt=0, le=BIGINT_MAX)]


class Address(InputModel):
    street: Name
    unit: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=64), AfterValidator(_single_line)] | None
    ) = None
    city: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_single_line)
    ]
    state: StateCode
    zip_code: ZipCode
    country: Literal["USA"] = "USA"


class Homeowner(InputModel):
    name: Name
    phone: Phone | None = None
    email: EmailStr | None = None

    @model_validator(mode="after")
    def _contact(self) -> Homeowner:
        if not self.phone and not self.email:
            raise ValueError("a phone number or an email address is required")
        return self


class JobCreate(InputModel):
    """A referral. `required_skills` and `skill_levels` may overlap; a skill listed without a level is still
    required (any level)."""

    summary: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(_no_nul)
    ]
    address: Address
    homeowner: Homeowner
    created_by_company_id: uuid.UUID
    created_by_technician_id: uuid.UUID
    category: (
        Annotated[
            str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_single_line)
        ]
        | None
    ) = None
    required_skills: list[SkillName] = Field(default_factory=list, max_length=50)
    skill_levels: dict[SkillName, SkillLevel] = Field(default_factory=dict, max_length=50)

    @field_validator("required_skills")
    @classmethod
    def _dedupe(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class ErrorOut(BaseModel):
    """An error answer (401, 404, 409, 413, 503): what went wrong, in words."""

    detail: str


class AddressOut(BaseModel):
    street: str
    unit: str | None
    city: str
    state: str
    zip_code: str
    country: str


class HomeownerOut(BaseModel):
    name: str
    phone: str | None
    email: str | None


class RoutingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_id: uuid.UUID
    receiving_company_id: uuid.UUID
    receiving_company_name: str | None = None
    status: str
    match_score: Decimal
    match_reasons: str
    attempts: int
    next_attempt_at: datetime
    delivery_mode: str | None
    external_id: str | None
    external_refs: dict[str, Any]
    external_status: str | None
    completed_at: datetime | None
    revenue: Decimal | None
    last_error_code: str | None
    last_error_message: str | None
    synced_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    sequence: int
    created_at: datetime
    updated_at: datetime


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: str | None
    attempt_no: int
    operation: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    http_status: int | None
    provider_trace_id: str | None
    error_code: str | None
    error_message: str | None
    duration_ms: int | None


class RoutingDetailOut(RoutingOut):
    attempts_log: list[AttemptOut] = Field(default_factory=list)


class JobOut(BaseModel):
    id: uuid.UUID
    summary: str
    address: AddressOut
    homeowner: HomeownerOut
    created_by_company_id: uuid.UUID
    created_by_technician_id: uuid.UUID
    category: str | None
    required_skills: list[str]
    skill_levels: dict[str, str]
    status: str
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    routings: list[RoutingOut] = Field(default_factory=list)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class SkillIn(InputModel):
    skill: SkillName
    level: SkillLevel = SkillLevel.intermediate
    primary: bool = False


class CompanyCreate(InputModel):
    name: Name
    trade: Trade | None = None
    service_zip_codes: list[ZipCode] = Field(default_factory=list, max_length=5000)
    timezone: TimeZone = "America/Los_Angeles"
    active: bool = True
    skills: list[SkillIn] = Field(default_factory=list, max_length=200)

    @field_validator("skills")
    @classmethod
    def _unique(cls, v: list[SkillIn]) -> list[SkillIn]:
        return _unique_skills(v)


class TechnicianCreate(InputModel):
    name: Name
    phone: Phone | None = None
    email: EmailStr | None = None


def _connection_input(spec: registry.ProviderSpec) -> type[BaseModel]:
    """The provider's connection model as a request body: the body rules (`InputModel`) and `enabled`."""
    name = f"{spec.model.__name__.removesuffix('Settings').removesuffix('Connection')}ConnectionIn"
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"A {spec.label} connection. Secrets are write-only: stored encrypted, never returned.",
        "__annotations__": {"enabled": bool, "ENFORCE_MODE_SETTINGS": ClassVar[bool]},
        "enabled": True,
        "ENFORCE_MODE_SETTINGS": True,
        "model_config": ConfigDict(
            extra="forbid", frozen=True, hide_input_in_errors=True, validate_default=True, title=name
        ),
    }
    model: type[BaseModel] = type(name, (spec.model, InputModel), namespace)
    return model


def _provider_of(value: Any) -> str | None:
    if isinstance(value, dict):
        name = value.get("provider", ProviderName.servicetitan.value)
        return name if isinstance(name, str) else None
    return getattr(value, "provider", None)


CONNECTION_INPUTS: dict[str, type[BaseModel]] = {
    name: _connection_input(spec) for name, spec in registry.PROVIDERS.items()
}
"""provider name → its request body model (registered providers only)."""

if TYPE_CHECKING:
    ConnectionInput = BaseModel
else:
    ConnectionInput = Annotated[
        Union[tuple(Annotated[m, Tag(n)] for n, m in CONNECTION_INPUTS.items())],  # noqa: UP007
        Discriminator(_provider_of, custom_error_type="provider", custom_error_message="unknown provider"),
    ]


class ConnectionCreate(RootModel[ConnectionInput]):
    """A company's connection to its field-service system, by `provider` (default `servicetitan`): the
    provider's own settings and secrets (`providers/registry.py`). Secrets are write-only: stored encrypted,
    never returned."""

    model_config = ConfigDict(hide_input_in_errors=True)

    @property
    def provider(self) -> str:
        return str(self.root.provider)  # type: ignore[attr-defined]

    @property
    def enabled(self) -> bool:
        return bool(self.root.enabled)  # type: ignore[attr-defined]


class ConnectionOut(BaseModel):
    """A connection as operators see it: the provider's non-secret `settings` and, per secret, whether it is
    set (`secrets_set`) — never a secret, not even masked."""

    id: uuid.UUID
    company_id: uuid.UUID
    provider: str
    environment: str
    base_url: str | None
    account_id: str  # the provider account (ServiceTitan tenant id): the shared rate budget's key
    delivery_mode: str
    settings: dict[str, Any]
    secrets_set: dict[str, bool]
    rate_limit_per_second: float
    rate_limit_burst: int
    enabled: bool
    health: str
    health_checked_at: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------------------------------------------
# Operator surface: management, retries, dry runs, queue and rate-limit views (api/routes/admin.py, si)
# --------------------------------------------------------------------------------------------------------------


def _unique_skills(skills: list[SkillIn]) -> list[SkillIn]:
    """Each skill once (names are normalised already: "a b" and "a-b" are both `a_b`)."""
    seen: set[str] = set()
    for s in skills:
        if s.skill in seen:
            raise ValueError(f"skill {s.skill!r} is listed twice")
        seen.add(s.skill)
    return skills


class CompanyUpdate(InputModel):
    """Fields to change; absent fields stay as they are. Skills have their own endpoint (replace the list)."""

    name: Name | None = None
    trade: Trade | None = None
    service_zip_codes: list[ZipCode] | None = Field(None, max_length=5000)
    timezone: TimeZone | None = None
    active: bool | None = None


class SkillsReplace(InputModel):
    """The company's complete skill list (replaces the stored one)."""

    skills: list[SkillIn] = Field(max_length=200)

    @field_validator("skills")
    @classmethod
    def _unique(cls, v: list[SkillIn]) -> list[SkillIn]:
        return _unique_skills(v)


class SkillOut(BaseModel):
    skill: str
    level: str
    primary: bool


class TechnicianOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    company_id: uuid.UUID
    name: str
    phone: str | None
    email: str | None
    active: bool
    created_at: datetime
    updated_at: datetime


class ConnectionSummary(BaseModel):
    """Whether (and how) a company is connected; no secret, not even masked."""

    configured: bool
    enabled: bool
    provider: str | None = None
    environment: str | None = None
    account_id: str | None = None
    delivery_mode: str | None = None
    health: str | None = None


class CompanyOut(BaseModel):
    id: uuid.UUID
    name: str
    partition_key: str  # the company's Dagster partition key: issued at creation, never changes with a rename
    trade: str | None
    active: bool
    service_zip_codes: list[str]
    timezone: str
    skills: list[SkillOut]
    technicians: int
    provider: ConnectionSummary
    created_at: datetime
    updated_at: datetime


class CompanyDetailOut(CompanyOut):
    technician_list: list[TechnicianOut] = Field(default_factory=list)


class ConnectionUpdate(InputModel):
    """Non-secret connection settings to change (the common ones below and the provider's own, e.g.
    ServiceTitan's `booking_provider_id`, Housecall Pro's `lead_source`). Secrets are replaced only through
    `PUT /api/admin/companies/{id}/connection` (create-or-replace), never patched."""

    model_config = ConfigDict(extra="allow")

    environment: Literal["production", "integration", "sandbox"] | None = None
    base_url: str | None = None
    delivery_mode: Literal["booking", "job", "lead"] | None = None
    rate_limit_per_second: float | None = None
    rate_limit_burst: int | None = None


class ProviderOut(ConnectionOut):
    company_name: str


class RetryRequest(InputModel):
    """Bulk retry of `failed` routings: at least one filter; filters combine with AND."""

    routing_ids: list[uuid.UUID] | None = Field(None, max_length=10_000)
    company_id: uuid.UUID | None = None
    error_code: (
        Annotated[
            str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), AfterValidator(_single_line)
        ]
        | None
    ) = None
    reason: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=500), AfterValidator(_single_line)] | None
    ) = None

    @model_validator(mode="after")
    def _some_filter(self) -> RetryRequest:
        if not (self.routing_ids or self.company_id or self.error_code):
            raise ValueError("name routing_ids, a company_id or an error_code")
        return self


class RetryOut(BaseModel):
    retried: int
    routing_ids: list[uuid.UUID]


class PlannedRequestOut(BaseModel):
    """One request a delivery run would make; `when` says under which condition it is made."""

    operation: str
    method: str
    url: str
    when: str
    params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | None = None


class DryRunOut(BaseModel):
    routing_id: uuid.UUID
    status: str
    receiving_company_id: uuid.UUID
    delivery_mode: str | None
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    due_now: bool
    lookup_required: bool
    would_send: bool
    decision: str
    connection: dict[str, Any] | None
    requests: list[PlannedRequestOut]
    placeholders: dict[str, str] = Field(default_factory=dict)
    sent: int = 0  # always 0: a dry run sends nothing


class DagsterQueueOut(BaseModel):
    queued: int
    in_progress: int


class CompanyQueueOut(BaseModel):
    company_id: uuid.UUID
    company_name: str
    partition_key: str  # the company's partition of `referral_deliveries` in Dagster
    by_status: dict[str, int]
    total: int
    due_now: int
    oldest_pending_age_seconds: float | None


class QueueStatsOut(BaseModel):
    by_status: dict[str, int]
    total: int
    oldest_pending_age_seconds: float | None
    companies: list[CompanyQueueOut]
    dagster: DagsterQueueOut | None
    dagster_unavailable_reason: str | None = None
    # PostgreSQL connections now against max_connections, and the service's configured maximum, line by line
    database_connections: ConnectionBudget | None = None


class CancelledRunOut(BaseModel):
    run_id: str
    job_name: str
    partition: str | None
    tags: dict[str, str]


class ClearQueuesOut(BaseModel):
    cancelled: list[CancelledRunOut]
    failed: dict[str, str]
    routings_changed: int = 0
    message: str


class RateLimitOut(BaseModel):
    provider: str
    account_id: str
    companies: list[str]
    rate: float
    burst: int
    current_rate: float
    tokens_available: float
    next_slot_at: datetime
    backoff_until: datetime | None
    backoff_seconds_left: float
    requests_total: int
    throttled_total: int
    last_throttled_at: datetime | None
    rate_limited_last_hour: int
