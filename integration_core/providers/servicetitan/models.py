"""ServiceTitan v2 request and response bodies: only the fields this service uses.

Field names are snake_case in Python and serialised with the exact camelCase names of ServiceTitan's OpenAPI
definitions (``../shared/servicetitan-openapi/``). Request models forbid unknown fields, because ServiceTitan's
request schemas do (``additionalProperties: false``); response models ignore fields we do not read, so a
provider adding fields never breaks us.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

ContactType = Literal["Phone", "Email", "Fax", "MobilePhone"]
CustomerType = Literal["Residential", "Commercial"]
BookingStatus = Literal["New", "Converted", "Dismissed", "Accepted"]


class _Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON body: camelCase names, unset optional fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Response(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


# --------------------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------------------


class Address(_Request):
    """``Crm.V2.AddressModel`` (bookings) and ``Crm.V2.Customers.CustomerAddress`` (customers, locations)."""

    street: str
    unit: str | None = None
    city: str
    state: str
    zip: str
    country: str


class Contact(_Request):
    """``Crm.V2.BookingContactModel`` / ``Crm.V2.Customers.NewCustomerContact``."""

    type: ContactType
    value: str
    memo: str | None = None


class ExternalDataItem(_Request):
    """``Crm.V2.ExternalDataModel``."""

    key: str
    value: str


class ExternalDataUpdate(_Request):
    """``Crm.V2.ExternalDataUpdateRequest``: data scoped to one application GUID."""

    application_guid: str
    external_data: list[ExternalDataItem]


class ResponseAddress(_Response):
    street: str | None = None
    unit: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None


class ResponseExternalData(_Response):
    key: str
    value: str | None = None


# --------------------------------------------------------------------------------------------------------------
# Bookings (CRM)
# --------------------------------------------------------------------------------------------------------------


class CreateBookingRequest(_Request):
    """``Crm.V2.CreateBookingRequest`` (required: source, name, summary, isFirstTimeClient, externalId)."""

    source: str
    name: str
    summary: str
    is_first_time_client: bool
    external_id: str
    address: Address | None = None
    contacts: list[Contact] | None = None
    customer_type: CustomerType | None = None
    start: datetime | None = None
    campaign_id: int | None = None
    business_unit_id: int | None = None
    job_type_id: int | None = None
    priority: Literal["Low", "Normal", "High", "Urgent"] | None = None
    is_send_confirmation_email: bool | None = None


class BookingResponse(_Response):
    """``Crm.V2.BookingResponse``."""

    id: int
    external_id: str
    status: BookingStatus
    created_on: datetime
    modified_on: datetime
    booking_provider_id: int
    job_id: int | None = None
    dismissing_reason_id: int | None = None


# --------------------------------------------------------------------------------------------------------------
# Customers and locations (CRM)
# --------------------------------------------------------------------------------------------------------------


class NewLocation(_Request):
    """``Crm.V2.Customers.NewLocation``: a location created together with its customer."""

    name: str
    address: Address
    contacts: list[Contact] | None = None


class CreateCustomerRequest(_Request):
    """``Crm.V2.Customers.CreateCustomerRequest`` (required: name, address, locations)."""

    name: str
    type: CustomerType | None = None
    address: Address
    locations: list[NewLocation] = Field(min_length=1)
    contacts: list[Contact] | None = None


class CreateLocationRequest(_Request):
    """``Crm.V2.Locations.CreateLocationRequest`` (required: customerId, name, address)."""

    customer_id: int
    name: str
    address: Address
    contacts: list[Contact] | None = None


class ContactResponse(_Response):
    id: int | None = None
    type: str
    value: str


class LocationResponse(_Response):
    """``Crm.V2.Locations.LocationResponse`` / ``CreateLocationResponse``."""

    id: int
    customer_id: int
    active: bool = True
    name: str
    address: ResponseAddress
    modified_on: datetime | None = None


class CustomerResponse(_Response):
    """``Crm.V2.Customers.CustomerResponse`` (list) and ``CreatedCustomerResponse`` (create: + locations, contacts)."""

    id: int
    active: bool = True
    name: str
    address: ResponseAddress | None = None
    modified_on: datetime | None = None
    merged_to_id: int | None = None
    locations: list[LocationResponse] = Field(default_factory=list)
    contacts: list[ContactResponse] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Jobs (JPM)
# --------------------------------------------------------------------------------------------------------------


class Appointment(_Request):
    """``Crm.V2.AppointmentInformation``: times in UTC."""

    start: datetime
    end: datetime
    arrival_window_start: datetime | None = None
    arrival_window_end: datetime | None = None


class CreateJobRequest(_Request):
    """``Crm.V2.JobCreateRequest`` (required: customerId, locationId, businessUnitId, jobTypeId, priority,
    campaignId, appointments)."""

    customer_id: int
    location_id: int
    business_unit_id: int
    job_type_id: int
    priority: str
    campaign_id: int
    appointments: list[Appointment] = Field(min_length=1)
    summary: str | None = None
    external_data: ExternalDataUpdate | None = None


class JobResponse(_Response):
    """``Crm.V2.JobResponse`` (JPM). ``externalData`` only lists the GUID passed as ``externalDataApplicationGuid``."""

    id: int
    job_number: str
    customer_id: int
    location_id: int
    job_status: str
    completed_on: datetime | None = None
    business_unit_id: int | None = None
    job_type_id: int | None = None
    campaign_id: int | None = None
    booking_id: int | None = None
    created_on: datetime | None = None
    modified_on: datetime
    external_data: list[ResponseExternalData] | None = None

    def external_value(self, key: str) -> str | None:
        for item in self.external_data or ():
            if item.key == key:
                return item.value
        return None


# --------------------------------------------------------------------------------------------------------------
# Invoices (accounting) and settings lookups
# --------------------------------------------------------------------------------------------------------------


class InvoiceJobRef(_Response):
    id: int
    number: str | None = None


class InvoiceResponse(_Response):
    """``Accounting.V2.InvoiceResponse``: money fields are decimal *strings*."""

    id: int
    total: Decimal | None = None
    job: InvoiceJobRef | None = None
    modified_on: datetime | None = None
    adjustment_to_id: int | None = None

    @field_validator("total", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError("not a decimal amount") from None


class NamedResource(_Response):
    """Business units, job types, campaigns: we only need their id, name and whether they are active."""

    id: int
    name: str | None = None
    active: bool = True


# --------------------------------------------------------------------------------------------------------------
# Paging and token
# --------------------------------------------------------------------------------------------------------------

T = TypeVar("T", bound=BaseModel)


class Page(_Response, Generic[T]):
    """``PaginatedResponse_Of_*``: ``page`` starts at 1; loop until ``hasMore`` is false."""

    page: int
    page_size: int
    has_more: bool
    total_count: int | None = None
    data: list[T]


class TokenResponse(BaseModel):
    """The OAuth token endpoint's answer (snake_case on the wire)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    access_token: str = Field(min_length=1, repr=False)
    expires_in: float = Field(ge=0)  # 0: use once, never cache
    token_type: str = "Bearer"
