"""Input and output shapes shared by the HTTP API, the CLI and the core (pydantic)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from integration_core.db.budget import ConnectionBudget
from integration_core.db.models import SkillLevel

NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
ZipCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{5}(-\d{4})?$")]
StateCode = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{2}$")]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=7, max_length=32, pattern=r"^[0-9+().\- x]+$")
]
SkillName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    street: Annotated[NonBlank, StringConstraints(max_length=255)]
    unit: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    city: Annotated[NonBlank, StringConstraints(max_length=100)]
    state: StateCode
    zip_code: ZipCode
    country: Literal["USA"] = "USA"


class Homeowner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[NonBlank, StringConstraints(max_length=255)]
    phone: Phone | None = None
    email: EmailStr | None = None

    @model_validator(mode="after")
    def _contact(self) -> Homeowner:
        if not self.phone and not self.email:
            raise ValueError("a phone number or an email address is required")
        return self


class JobCreate(BaseModel):
    """A referral. `required_skills` and `skill_levels` may overlap; a skill listed without a level is still
    required (any level)."""

    model_config = ConfigDict(extra="forbid")

    summary: Annotated[NonBlank, StringConstraints(max_length=2000)]
    address: Address
    homeowner: Homeowner
    created_by_company_id: uuid.UUID
    created_by_technician_id: uuid.UUID
    category: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = None
    required_skills: list[SkillName] = Field(default_factory=list, max_length=50)
    skill_levels: dict[SkillName, SkillLevel] = Field(default_factory=dict, max_length=50)

    @field_validator("required_skills")
    @classmethod
    def _dedupe(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


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


class SkillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    skill: SkillName
    level: SkillLevel = SkillLevel.intermediate
    primary: bool = False


class CompanyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[NonBlank, StringConstraints(max_length=255)]
    trade: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    service_zip_codes: list[ZipCode] = Field(default_factory=list, max_length=5000)
    timezone: Annotated[NonBlank, StringConstraints(max_length=64)] = "America/Los_Angeles"
    active: bool = True
    skills: list[SkillIn] = Field(default_factory=list, max_length=200)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class TechnicianCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[NonBlank, StringConstraints(max_length=255)]
    phone: Phone | None = None
    email: EmailStr | None = None


class ConnectionCreate(BaseModel):
    """A company's ServiceTitan connection. Secrets are write-only: stored encrypted, never returned."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["servicetitan"] = "servicetitan"
    environment: Literal["production", "integration", "sandbox"] = "sandbox"
    base_url: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^https?://\S+$")] | None = None
    tenant_id: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{1,18}$")]
    client_id: SecretStr
    client_secret: SecretStr
    app_key: SecretStr
    delivery_mode: Literal["booking", "job"] = "booking"
    booking_provider_id: int | None = Field(None, gt=0)
    business_unit_id: int | None = Field(None, gt=0)
    job_type_id: int | None = Field(None, gt=0)
    campaign_id: int | None = Field(None, gt=0)
    priority: Literal["Low", "Normal", "High", "Urgent"] = "Normal"
    external_data_guid: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    rate_limit_per_second: float = Field(60.0, gt=0, le=1000)
    rate_limit_burst: int = Field(10, ge=1, le=1000)
    enabled: bool = True

    @model_validator(mode="after")
    def _mode_needs_ids(self) -> ConnectionCreate:
        if self.delivery_mode == "booking" and self.booking_provider_id is None:
            raise ValueError("delivery_mode 'booking' needs booking_provider_id")
        if self.delivery_mode == "job":
            missing = [f for f in ("business_unit_id", "job_type_id", "campaign_id") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"delivery_mode 'job' needs {', '.join(missing)}")
            if not self.external_data_guid:
                raise ValueError("delivery_mode 'job' needs external_data_guid (the app's externalData GUID)")
        if self.environment == "sandbox" and not self.base_url:
            raise ValueError("environment 'sandbox' needs base_url")
        if self.external_data_guid:
            try:
                uuid.UUID(self.external_data_guid)
            except ValueError:
                raise ValueError("external_data_guid must be a GUID (the app's externalData GUID)") from None
        for name in ("client_id", "client_secret", "app_key"):
            if not getattr(self, name).get_secret_value().strip():
                raise ValueError(f"{name} must not be empty")
        return self


class ConnectionOut(BaseModel):
    id: uuid.UUID
    company_id: uuid.UUID
    provider: str
    environment: str
    base_url: str | None
    tenant_id: str
    client_id: str | None  # masked
    delivery_mode: str
    booking_provider_id: int | None
    business_unit_id: int | None
    job_type_id: int | None
    campaign_id: int | None
    priority: str
    external_data_guid: str | None
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


def _valid_timezone(v: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {v!r}") from exc
    return v


class CompanyUpdate(BaseModel):
    """Fields to change; absent fields stay as they are. Skills have their own endpoint (replace the list)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[NonBlank, StringConstraints(max_length=255)] | None = None
    trade: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    service_zip_codes: list[ZipCode] | None = Field(None, max_length=5000)
    timezone: Annotated[NonBlank, StringConstraints(max_length=64)] | None = None
    active: bool | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else _valid_timezone(v)


class SkillsReplace(BaseModel):
    """The company's complete skill list (replaces the stored one)."""

    model_config = ConfigDict(extra="forbid")

    skills: list[SkillIn] = Field(max_length=200)

    @field_validator("skills")
    @classmethod
    def _unique(cls, v: list[SkillIn]) -> list[SkillIn]:
        seen: set[str] = set()
        for s in v:
            key = s.skill.casefold()
            if key in seen:
                raise ValueError(f"skill {s.skill!r} is listed twice")
            seen.add(key)
        return v


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
    tenant_id: str | None = None
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


class ConnectionUpdate(BaseModel):
    """Non-secret connection fields to change. Credentials are replaced only through
    `PUT /api/admin/companies/{id}/connection` (create-or-replace), never patched."""

    model_config = ConfigDict(extra="forbid")

    environment: Literal["production", "integration", "sandbox"] | None = None
    base_url: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^https?://\S+$")] | None = None
    tenant_id: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{1,18}$")] | None = None
    delivery_mode: Literal["booking", "job"] | None = None
    booking_provider_id: int | None = Field(None, gt=0)
    business_unit_id: int | None = Field(None, gt=0)
    job_type_id: int | None = Field(None, gt=0)
    campaign_id: int | None = Field(None, gt=0)
    priority: Literal["Low", "Normal", "High", "Urgent"] | None = None
    external_data_guid: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    rate_limit_per_second: float | None = Field(None, gt=0, le=1000)
    rate_limit_burst: int | None = Field(None, ge=1, le=1000)


class ProviderOut(ConnectionOut):
    company_name: str


class RetryRequest(BaseModel):
    """Bulk retry of `failed` routings: at least one filter; filters combine with AND."""

    model_config = ConfigDict(extra="forbid")

    routing_ids: list[uuid.UUID] | None = Field(None, max_length=10_000)
    company_id: uuid.UUID | None = None
    error_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None

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
    tenant_id: str
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
