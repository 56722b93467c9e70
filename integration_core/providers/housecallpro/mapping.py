"""Referral → Housecall Pro bodies, and Housecall Pro statuses/invoices → our vocabulary.

Pure functions: no I/O, so every decision here is unit-testable.

Decisions (``docs/housecallpro.md`` has the reasoning):
- **Marker.** Every lead and job we create carries the tag ``tradeengage:<routing id>`` (:func:`marker_tag`).
  ``tags`` is the one field the definition accepts on ``LeadCreate``, ``JobCreate`` *and* ``CustomerCreate`` and
  returns on ``Lead``, ``Job`` and ``Customer`` that is free text per record: the lead's ``note`` is write-only
  (``Lead`` has no notes) and ``lead_source`` is the company's attribution list, one value for all our referrals
  (the connection's ``lead_source``, default "TradeEngage"), which also narrows lookups of our leads.
- **Customer.** Leads and jobs need a customer and an address id: the homeowner becomes a customer (found again
  by phone, e-mail, or name and address; see ``provider.py``), created with the service address.
- **Job.** Created without a schedule (``needs scheduling``): the office books the visit, as it would convert
  a lead. The referral text goes into ``notes`` (``JobCreate`` has no description).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

from integration_core.providers.base import DeliveryRequest, ExternalStatus
from integration_core.providers.housecallpro.config import HousecallProSettings
from integration_core.providers.housecallpro.models import (
    CustomerCreate,
    Invoice,
    JobCreate,
    JobFields,
    LeadCreate,
    NewAddress,
)
from integration_core.providers.matching import normalize_phone, same_address, same_name

__all__ = [
    "MARKER_PREFIX",
    "address_body",
    "customer_body",
    "job_body",
    "job_status",
    "lead_body",
    "lead_status",
    "marker_from_tags",
    "marker_tag",
    "normalize_phone",
    "note_text",
    "revenue_from_invoices",
    "same_address",
    "same_name",
    "split_name",
]

MARKER_PREFIX = "tradeengage:"

_LEAD_STATUS: dict[str, ExternalStatus] = {"open": "new", "won": "converted", "lost": "dismissed"}
_JOB_STATUS: dict[str, ExternalStatus] = {
    "needs scheduling": "new",
    "unscheduled": "new",
    "scheduled": "scheduled",
    "in progress": "in_progress",
    "complete rated": "completed",
    "complete unrated": "completed",
    "completed": "completed",
    "user canceled": "canceled",
    "pro canceled": "canceled",
    "canceled": "canceled",
}
_NO_REVENUE_INVOICES = frozenset({"voided", "canceled", "cancelled", "uncollectible"})


def marker_tag(marker: str | uuid.UUID) -> str:
    """The tag that identifies a routing's records: ``tradeengage:<routing id>``."""
    return f"{MARKER_PREFIX}{marker}"


def marker_from_tags(tags: Iterable[str]) -> uuid.UUID | None:
    """The routing id a record's tags carry (the first readable marker tag), or ``None``."""
    for tag in tags:
        if isinstance(tag, str) and tag.strip().lower().startswith(MARKER_PREFIX):
            try:
                return uuid.UUID(tag.strip()[len(MARKER_PREFIX) :])
            except ValueError:
                continue
    return None


def has_marker(tags: Iterable[str], marker: str) -> bool:
    wanted = marker_tag(marker).lower()
    return any(isinstance(tag, str) and tag.strip().lower() == wanted for tag in tags)


# --------------------------------------------------------------------------------------------------------------
# Outbound
# --------------------------------------------------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str | None]:
    """``"Jane Q Doe"`` → ``("Jane Q", "Doe")``; a single word is a first name."""
    parts = name.split()
    if len(parts) <= 1:
        return (parts[0] if parts else name.strip()), None
    return " ".join(parts[:-1]), parts[-1]


def address_body(request: DeliveryRequest) -> NewAddress:
    return NewAddress(
        street=request.street.strip(),
        street_line_2=(request.unit or "").strip() or None,
        city=request.city.strip(),
        state=request.state.strip(),
        zip=request.zip.strip(),
        country=(request.country or "USA").strip(),
    )


def note_text(request: DeliveryRequest) -> str:
    """The referral text plus where it came from, so the office sees the context and our reference."""
    origin = "Referred via TradeEngage"
    if request.referring_company_name:
        origin += f" by {request.referring_company_name.strip()}"
    if request.category:
        origin += f" (category: {request.category.strip()})"
    return "\n".join([request.summary.strip(), "", origin + ".", f"TradeEngage referral id: {request.marker}"])


def customer_body(request: DeliveryRequest, config: HousecallProSettings) -> CustomerCreate:
    """``CustomerCreate``: the homeowner with the service address (notifications left to the company)."""
    first, last = split_name(request.homeowner_name.strip())
    return CustomerCreate(
        first_name=first,
        last_name=last,
        email=(request.homeowner_email or "").strip() or None,
        mobile_number=normalize_phone(request.homeowner_phone) or None,
        lead_source=config.lead_source,
        addresses=[address_body(request)],
    )


def lead_body(
    request: DeliveryRequest, config: HousecallProSettings, *, customer_id: str, address_id: str | None
) -> LeadCreate:
    """``LeadCreate`` for the homeowner's customer and service address, carrying the marker tag."""
    return LeadCreate(
        customer_id=customer_id,
        address_id=address_id,
        lead_source=config.lead_source,
        note=note_text(request),
        tags=[marker_tag(request.marker)],
    )


def job_body(request: DeliveryRequest, config: HousecallProSettings, *, customer_id: str, address_id: str) -> JobCreate:
    """``JobCreate`` (unscheduled) for the homeowner's customer and service address, carrying the marker tag."""
    fields = None
    if config.job_type_id or config.business_unit_id:
        fields = JobFields(job_type_id=config.job_type_id, business_unit_id=config.business_unit_id)
    return JobCreate(
        customer_id=customer_id,
        address_id=address_id,
        tags=[marker_tag(request.marker)],
        lead_source=config.lead_source,
        notes=note_text(request),
        job_fields=fields,
    )


# --------------------------------------------------------------------------------------------------------------
# Matching helpers (customer de-duplication)
# --------------------------------------------------------------------------------------------------------------


# ``normalize_phone``, ``same_name`` and ``same_address`` (an address's ``street_line_2`` as the unit) come from
# :mod:`integration_core.providers.matching`.


# --------------------------------------------------------------------------------------------------------------
# Inbound
# --------------------------------------------------------------------------------------------------------------


def lead_status(status: str | None) -> ExternalStatus | None:
    """Lead status (``open|won|lost``) → ours (``new|converted|dismissed``); ``None`` if unknown."""
    return _LEAD_STATUS.get((status or "").strip().lower())


def job_status(work_status: str | None) -> ExternalStatus | None:
    """Job ``work_status`` → ours; ``None`` if unknown (see the table in ``docs/housecallpro.md``)."""
    return _JOB_STATUS.get(" ".join((work_status or "").strip().lower().replace("_", " ").split()))


def revenue_from_invoices(invoices: Iterable[Invoice]) -> Decimal | None:
    """The job's revenue: the sum of its invoices' ``amount`` (integer cents) in dollars, voided, canceled and
    uncollectible invoices excluded. ``None`` when no invoice carries an amount (unknown, not zero)."""
    amounts = [
        invoice.amount
        for invoice in invoices
        if invoice.amount is not None and (invoice.status or "").strip().lower() not in _NO_REVENUE_INVOICES
    ]
    if not amounts:
        return None
    return (Decimal(sum(amounts)) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
