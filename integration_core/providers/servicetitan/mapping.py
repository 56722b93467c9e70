"""Referral → ServiceTitan bodies, and ServiceTitan statuses/invoices → our vocabulary.

Pure functions: no I/O, no clock (callers pass ``now``), so every decision here is unit-testable.

Decisions:
- **Marker.** Bookings carry ``externalId = str(routing_id)``; jobs carry ``externalData`` under the connection's
  application GUID with key :data:`MARKER_KEY` and the routing id as value. ServiceTitan's customer and location
  create bodies accept no ``externalData`` (``additionalProperties: false`` in the v2 definitions), so those are
  found again by the homeowner's phone, e-mail or name and address (see ``provider.py``).
- **Contacts.** The homeowner phone goes in as ``MobilePhone`` (a technician on site usually records the
  homeowner's cell), the e-mail as ``Email``.
- **First-time client.** Bookings require ``isFirstTimeClient``; a referral comes from another company, so we send
  ``true`` and let the receiving CSR correct it when converting the booking.
- **Job appointment.** ``Jobs_Create`` requires at least one appointment. We book a placeholder slot on the next
  business day (Mon-Fri, strictly after ``now``'s UTC date) from 15:00 to 17:00 UTC, with the same arrival
  window: that is mid-morning across the continental US (10-12 Eastern, 7-9 Pacific in winter), so it lands in
  working hours for every US tenant and never in the past. The receiving company reschedules it like any
  booked call; their dispatch board is the source of truth for the real time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from integration_core.providers.base import DeliveryRequest, ExternalStatus
from integration_core.providers.matching import normalize_phone, same_address
from integration_core.providers.servicetitan.config import ConnectionConfig
from integration_core.providers.servicetitan.models import (
    Address,
    Appointment,
    Contact,
    CreateBookingRequest,
    CreateCustomerRequest,
    CreateJobRequest,
    CreateLocationRequest,
    ExternalDataItem,
    ExternalDataUpdate,
    InvoiceResponse,
    NewLocation,
)

__all__ = [
    "APPOINTMENT_LENGTH",
    "APPOINTMENT_START_UTC",
    "BOOKING_SOURCE",
    "MARKER_KEY",
    "booking_body",
    "booking_status",
    "customer_body",
    "job_body",
    "job_status",
    "location_body",
    "next_appointment",
    "normalize_phone",
    "revenue_from_invoices",
    "same_address",
]

MARKER_KEY = "tradeengageRoutingId"
BOOKING_SOURCE = "TradeEngage referral"
APPOINTMENT_START_UTC = time(15, 0)
APPOINTMENT_LENGTH = timedelta(hours=2)

_BOOKING_STATUS: dict[str, ExternalStatus] = {
    "new": "new",
    "accepted": "accepted",
    "dismissed": "dismissed",
    "converted": "converted",
}
_JOB_STATUS: dict[str, ExternalStatus] = {
    "scheduled": "scheduled",
    "dispatched": "dispatched",
    "inprogress": "in_progress",
    "working": "in_progress",
    "hold": "hold",
    "onhold": "hold",
    "completed": "completed",
    "done": "completed",
    "canceled": "canceled",
    "cancelled": "canceled",
}


# --------------------------------------------------------------------------------------------------------------
# Outbound
# --------------------------------------------------------------------------------------------------------------


def _address(request: DeliveryRequest) -> Address:
    return Address(
        street=request.street.strip(),
        unit=(request.unit or "").strip() or None,
        city=request.city.strip(),
        state=request.state.strip(),
        zip=request.zip.strip(),
        country=(request.country or "USA").strip(),
    )


def _contacts(request: DeliveryRequest) -> list[Contact]:
    contacts: list[Contact] = []
    if request.homeowner_phone and request.homeowner_phone.strip():
        contacts.append(Contact(type="MobilePhone", value=request.homeowner_phone.strip()))
    if request.homeowner_email and request.homeowner_email.strip():
        contacts.append(Contact(type="Email", value=request.homeowner_email.strip()))
    return contacts


def _summary(request: DeliveryRequest) -> str:
    """The referral text plus where it came from, so the receiving CSR sees the context and our reference."""
    lines = [request.summary.strip(), ""]
    origin = "Referred via TradeEngage"
    if request.referring_company_name:
        origin += f" by {request.referring_company_name.strip()}"
    if request.category:
        origin += f" (category: {request.category.strip()})"
    lines.append(origin + ".")
    lines.append(f"TradeEngage referral id: {request.marker}")
    return "\n".join(lines)


def booking_body(request: DeliveryRequest, config: ConnectionConfig) -> CreateBookingRequest:
    """``Bookings_Create`` body: one booking per routing, ``externalId`` = routing id."""
    contacts = _contacts(request)
    return CreateBookingRequest(
        source=BOOKING_SOURCE,
        name=request.homeowner_name.strip(),
        summary=_summary(request),
        is_first_time_client=True,
        external_id=request.marker,
        address=_address(request),
        contacts=contacts or None,
        customer_type="Residential",
        business_unit_id=config.business_unit_id,
        job_type_id=config.job_type_id,
        campaign_id=config.campaign_id,
        priority=config.priority,
    )


def customer_body(request: DeliveryRequest) -> CreateCustomerRequest:
    """``Customers_Create`` body: a residential customer with the service address as its one location."""
    contacts = _contacts(request)
    address = _address(request)
    return CreateCustomerRequest(
        name=request.homeowner_name.strip(),
        type="Residential",
        address=address,
        locations=[NewLocation(name=request.homeowner_name.strip(), address=address, contacts=contacts or None)],
        contacts=contacts or None,
    )


def location_body(request: DeliveryRequest, customer_id: int) -> CreateLocationRequest:
    """``Locations_Create`` body: the service address under an existing customer."""
    contacts = _contacts(request)
    return CreateLocationRequest(
        customer_id=customer_id,
        name=request.homeowner_name.strip(),
        address=_address(request),
        contacts=contacts or None,
    )


def next_appointment(now: datetime) -> Appointment:
    """The placeholder appointment: next business day after ``now`` (UTC), 15:00-17:00 UTC (module docstring)."""
    day = now.astimezone(UTC).date() + timedelta(days=1)
    while day.weekday() >= 5:  # Saturday, Sunday
        day += timedelta(days=1)
    start = datetime.combine(day, APPOINTMENT_START_UTC, tzinfo=UTC)
    end = start + APPOINTMENT_LENGTH
    return Appointment(start=start, end=end, arrival_window_start=start, arrival_window_end=end)


def job_body(
    request: DeliveryRequest,
    config: ConnectionConfig,
    *,
    customer_id: int,
    location_id: int,
    now: datetime,
) -> CreateJobRequest:
    """``Jobs_Create`` body carrying the marker in ``externalData`` under the connection's GUID.

    Raises:
        ValueError: the connection lacks a job-mode setting (callers check ``config.missing_settings()`` first).
    """
    if (
        config.business_unit_id is None
        or config.job_type_id is None
        or config.campaign_id is None
        or config.external_data_guid is None
    ):
        raise ValueError("job mode needs business_unit_id, job_type_id, campaign_id and external_data_guid")
    return CreateJobRequest(
        customer_id=customer_id,
        location_id=location_id,
        business_unit_id=config.business_unit_id,
        job_type_id=config.job_type_id,
        priority=config.priority,
        campaign_id=config.campaign_id,
        appointments=[next_appointment(now)],
        summary=_summary(request),
        external_data=ExternalDataUpdate(
            application_guid=str(config.external_data_guid),
            external_data=[ExternalDataItem(key=MARKER_KEY, value=request.marker)],
        ),
    )


# --------------------------------------------------------------------------------------------------------------
# Matching helpers (customer de-duplication)
# --------------------------------------------------------------------------------------------------------------


# ``normalize_phone`` and ``same_address`` come from :mod:`integration_core.providers.matching`.


# --------------------------------------------------------------------------------------------------------------
# Inbound
# --------------------------------------------------------------------------------------------------------------


def booking_status(status: str) -> ExternalStatus | None:
    """ServiceTitan booking status (``New|Accepted|Dismissed|Converted``) → ours; ``None`` if unknown."""
    return _BOOKING_STATUS.get(status.strip().lower())


def job_status(status: str) -> ExternalStatus | None:
    """ServiceTitan job status (``Scheduled|Dispatched|InProgress|Hold|Completed|Canceled``) → ours."""
    return _JOB_STATUS.get(status.strip().lower().replace(" ", "").replace("_", ""))


def revenue_from_invoices(invoices: Iterable[InvoiceResponse]) -> Decimal | None:
    """The job's revenue: the sum of its invoices' totals (adjustment invoices included), to the cent.

    ``None`` when the job has no invoice with a total yet (revenue unknown, not zero).
    """
    totals = [invoice.total for invoice in invoices if invoice.total is not None]
    if not totals:
        return None
    return sum(totals, Decimal(0)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
