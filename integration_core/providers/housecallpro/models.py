"""Housecall Pro v1 request and response bodies: only the fields this service uses.

Names are exactly those of ``housecall.v1.yaml`` (snake_case on the wire, so no aliases). Request models forbid
unknown fields (we send nothing the definition does not describe); response models ignore fields we do not read
and accept ``null`` wherever the definition's fields could plausibly be absent, so a provider adding or omitting
optional fields never breaks a delivery.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON body, unset optional fields omitted."""
        return self.model_dump(mode="json", exclude_none=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def parse_timestamp(value: Any) -> datetime | None:
    """Housecall Pro's ISO-8601 strings (``2024-01-30T00:00:00Z``, with or without offset) as aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# --------------------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------------------


class NewAddress(_Request):
    """``AddressCreate`` (and the items of ``CustomerCreate.addresses``)."""

    street: str
    street_line_2: str | None = None
    city: str
    state: str
    zip: str
    country: str


class CustomerCreate(_Request):
    """``CustomerCreate``: one of the name/e-mail/number fields is required."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    mobile_number: str | None = None
    notifications_enabled: bool | None = None
    lead_source: str | None = None
    notes: str | None = None
    tags: list[str] | None = None
    addresses: list[NewAddress] | None = None


class LeadCreate(_Request):
    """``LeadCreate`` for an existing customer and address."""

    customer_id: str
    address_id: str | None = None
    lead_source: str | None = None
    note: str | None = None
    tags: list[str] | None = None


class JobFields(_Request):
    job_type_id: str | None = None
    business_unit_id: str | None = None


class JobCreate(_Request):
    """``JobCreate`` (required: ``customer_id``, ``address_id``). No schedule: the job lands unscheduled."""

    customer_id: str
    address_id: str
    tags: list[str] | None = None
    lead_source: str | None = None
    notes: str | None = None
    job_fields: JobFields | None = None


# --------------------------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------------------------


class Address(_Response):
    """``Address`` (``id`` required)."""

    id: str
    type: str | None = None
    street: str | None = None
    street_line_2: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None


class Customer(_Response):
    """``Customer``."""

    id: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    mobile_number: str | None = None
    home_number: str | None = None
    work_number: str | None = None
    lead_source: str | None = None
    tags: list[str] = Field(default_factory=list)
    addresses: list[Address] = Field(default_factory=list)
    created_at: str | None = None

    @field_validator("tags", "addresses", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    @property
    def numbers(self) -> list[str]:
        return [n for n in (self.mobile_number, self.home_number, self.work_number) if n]


class LeadCustomer(_Response):
    id: str | None = None


class LeadAddress(_Response):
    id: str | None = None


class Lead(_Response):
    """``Lead``: status ``open|won|lost``; no timestamps except ``lost_at``."""

    id: str
    number: int | None = None
    customer: LeadCustomer | None = None
    address: LeadAddress | None = None
    lead_source: str | None = None
    tags: list[str] = Field(default_factory=list)
    status: str | None = None
    lost_at: str | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class JobCustomer(_Response):
    id: str | None = None


class WorkTimestamps(_Response):
    on_my_way_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None


class Job(_Response):
    """``Job`` (one job segment)."""

    id: str
    invoice_number: str | None = None
    customer: JobCustomer | None = None
    address: Address | None = None
    work_status: str | None = None
    work_timestamps: WorkTimestamps | None = None
    total_amount: int | None = None
    tags: list[str] = Field(default_factory=list)
    lead_source: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    canceled_at: str | None = None
    deleted_at: str | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("invoice_number", mode="before")
    @classmethod
    def _number_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value


class Invoice(_Response):
    """``JobInvoice`` (``GET /jobs/{id}/invoices``) and the items of ``GET /invoices`` (which add ``job_id``).

    Amounts are integer cents.
    """

    id: str
    status: str | None = None
    invoice_number: str | None = None
    amount: int | None = None
    paid_at: str | None = None
    job_id: str | None = None


class Paginated(_Response):
    """``PaginatedList``: ``page`` (from 1) of ``total_pages``."""

    page: float | None = None
    page_size: float | None = None
    total_pages: float | None = None
    total_items: float | None = None


class CustomersPage(Paginated):
    customers: list[Customer] = Field(default_factory=list)


class LeadsPage(Paginated):
    leads: list[Lead] = Field(default_factory=list)


class JobsPage(Paginated):
    jobs: list[Job] = Field(default_factory=list)


class InvoicesPage(Paginated):
    invoices: list[Invoice] = Field(default_factory=list)


class JobInvoices(_Response):
    """``GET /jobs/{job_id}/invoices`` (not paginated)."""

    invoices: list[Invoice] = Field(default_factory=list)
