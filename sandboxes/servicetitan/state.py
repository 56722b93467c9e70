"""In-memory state of the sandbox: tenants, their records, tokens, limits, faults and counters.

Concurrency: the sandbox runs on one event loop (uvicorn). Every mutation below is synchronous — no
`await` between reading and writing a record — so requests never interleave inside one; the API layer only
awaits (latency, timeouts, definitions loading) outside these methods.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from integration_core.local.demo import DEMO_COMPANIES, DEMO_TENANTS, DemoTenant
from sandboxes.common.state import Clock, RequestStats
from sandboxes.common.state import TransitionError as TransitionError

from .auth import TokenSigner
from .config import OfficeConfig, SandboxConfig
from .faults import TenantFaults
from .ratelimit import TokenBucket

ExternalData = dict[str, list[dict[str, str]]]  # application GUID -> [{key, value}]

CREATED_BY_ID = 1  # the API user ServiceTitan attributes records to
BOOKING_STATUSES = ("New", "Accepted", "Dismissed", "Converted")
BOOKING_TRANSITIONS: dict[str, frozenset[str]] = {
    "New": frozenset({"Accepted", "Dismissed", "Converted"}),
    "Accepted": frozenset({"Dismissed", "Converted"}),
}
JOB_STATUSES = ("Scheduled", "Dispatched", "InProgress", "Hold", "Completed", "Canceled")
JOB_CHAIN = ("Scheduled", "Dispatched", "InProgress", "Completed")
TERMINAL_JOB_STATUSES = frozenset({"Completed", "Canceled"})
PRIORITIES = ("Low", "Normal", "High", "Urgent")
PLACEHOLDER_ADDRESS = {"street": "Unknown", "city": "Unknown", "state": "NA", "zip": "00000", "country": "USA"}


def fmt_dt(dt: datetime) -> str:
    """UTC with 7 fractional digits, as ServiceTitan writes them: 2021-07-19T20:35:38.2876004Z."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def fmt_opt(dt: datetime | None) -> str | None:
    return fmt_dt(dt) if dt is not None else None


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def external_data_json(data: ExternalData, guid: str | None) -> list[dict[str, str]]:
    """externalData is isolated by application GUID: only the asked-for GUID's items are shown."""
    if guid is None:
        return []
    return [dict(item) for item in data.get(guid.lower(), [])]


# -- records -------------------------------------------------------------------------------------


@dataclass
class Contact:
    id: int
    type: str
    value: str
    memo: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "value": self.value, "memo": self.memo}


@dataclass
class Booking:
    id: int
    provider_id: int
    source: str
    name: str
    summary: str
    external_id: str
    is_first_time_client: bool
    start: datetime
    created_on: datetime
    modified_on: datetime
    address: dict[str, Any] | None = None
    contacts: list[Contact] = field(default_factory=list)
    customer_type: str | None = None
    campaign_id: int | None = None
    business_unit_id: int | None = None
    job_type_id: int | None = None
    priority: str | None = None
    uploaded_images: list[str] | None = None
    send_confirmation_email: bool | None = None
    status: str = "New"
    dismissing_reason_id: int | None = None
    job_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "createdOn": fmt_dt(self.created_on),
            "name": self.name,
        }
        # Nullable `oneOf` members are left out rather than sent as null: the definitions (as validated)
        # accept an absent address/customerType/priority but not a null one.
        if self.address is not None:
            out["address"] = dict(self.address)
        if self.customer_type is not None:
            out["customerType"] = self.customer_type
        out.update(
            {
                "start": fmt_dt(self.start),
                "summary": self.summary,
                "campaignId": self.campaign_id,
                "businessUnitId": self.business_unit_id,
                "isFirstTimeClient": self.is_first_time_client,
                "uploadedImages": self.uploaded_images,
                "isSendConfirmationEmail": self.send_confirmation_email,
                "status": self.status,
                "dismissingReasonId": self.dismissing_reason_id,
                "jobId": self.job_id,
                "externalId": self.external_id,
            }
        )
        if self.priority is not None:
            out["priority"] = self.priority
        out.update(
            {
                "jobTypeId": self.job_type_id,
                "bookingProviderId": self.provider_id,
                "modifiedOn": fmt_dt(self.modified_on),
            }
        )
        return out


@dataclass
class Customer:
    id: int
    name: str
    type: str
    address: dict[str, Any]
    created_on: datetime
    modified_on: datetime
    contacts: list[Contact] = field(default_factory=list)
    location_ids: list[int] = field(default_factory=list)
    custom_fields: list[dict[str, Any]] = field(default_factory=list)
    do_not_mail: bool = False
    do_not_service: bool = False
    external_data: ExternalData = field(default_factory=dict)
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "active": self.active,
            "name": self.name,
            "type": self.type,
            "address": dict(self.address),
            "customFields": [dict(f) for f in self.custom_fields],
            "balance": 0.0,
            "doNotMail": self.do_not_mail,
            "doNotService": self.do_not_service,
            "createdOn": fmt_dt(self.created_on),
            "createdById": CREATED_BY_ID,
            "modifiedOn": fmt_dt(self.modified_on),
            "mergedToId": None,
        }


@dataclass
class Location:
    id: int
    customer_id: int
    name: str
    address: dict[str, Any]
    created_on: datetime
    modified_on: datetime
    contacts: list[Contact] = field(default_factory=list)
    custom_fields: list[dict[str, Any]] = field(default_factory=list)
    external_data: ExternalData = field(default_factory=dict)
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customerId": self.customer_id,
            "active": self.active,
            "name": self.name,
            "address": dict(self.address),
            "customFields": [dict(f) for f in self.custom_fields],
            "createdOn": fmt_dt(self.created_on),
            "createdById": CREATED_BY_ID,
            "modifiedOn": fmt_dt(self.modified_on),
            "mergedToId": None,
            "taxZoneId": None,
        }

    def created_json(self) -> dict[str, Any]:
        return {**self.to_json(), "contacts": [c.to_json() for c in self.contacts]}


@dataclass
class Appointment:
    id: int
    start: datetime
    end: datetime
    arrival_window_start: datetime | None = None
    arrival_window_end: datetime | None = None
    technician_ids: list[int] = field(default_factory=list)


@dataclass
class Job:
    id: int
    customer_id: int
    location_id: int
    business_unit_id: int
    job_type_id: int
    priority: str
    campaign_id: int
    created_on: datetime
    modified_on: datetime
    appointments: list[Appointment]
    summary: str | None = None
    custom_fields: list[dict[str, Any]] = field(default_factory=list)
    tag_type_ids: list[int] = field(default_factory=list)
    external_data: ExternalData = field(default_factory=dict)
    booking_id: int | None = None
    status: str = "Scheduled"
    completed_on: datetime | None = None
    invoice_id: int | None = None

    @property
    def number(self) -> str:
        return str(self.id)

    def to_json(self, guid: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "jobNumber": self.number,
            "customerId": self.customer_id,
            "locationId": self.location_id,
            "jobStatus": self.status,
            "completedOn": fmt_opt(self.completed_on),
            "businessUnitId": self.business_unit_id,
            "jobTypeId": self.job_type_id,
            "priority": self.priority,
            "campaignId": self.campaign_id,
            "summary": self.summary,
            "customFields": [dict(f) for f in self.custom_fields],
            "appointmentCount": len(self.appointments),
            "firstAppointmentId": self.appointments[0].id,
            "lastAppointmentId": self.appointments[-1].id,
            "recallForId": None,
            "warrantyId": None,
            "noCharge": False,
            "notificationsEnabled": True,
            "createdOn": fmt_dt(self.created_on),
            "createdById": CREATED_BY_ID,
            "modifiedOn": fmt_dt(self.modified_on),
            "tagTypeIds": list(self.tag_type_ids),
            "leadCallId": None,
            "bookingId": self.booking_id,
            "soldById": None,
            "externalData": external_data_json(self.external_data, guid),
        }


@dataclass
class Invoice:
    id: int
    job_id: int
    job_number: str
    job_type_name: str
    customer_id: int
    customer_name: str
    business_unit_id: int
    business_unit_name: str
    total: Decimal
    summary: str | None
    invoice_date: datetime
    created_on: datetime
    modified_on: datetime
    customer_address: dict[str, Any] | None = None
    location_address: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "syncStatus": "Pending",
            "summary": self.summary,
            "referenceNumber": self.job_number,
            "invoiceDate": fmt_dt(self.invoice_date),
            "dueDate": fmt_dt(self.invoice_date + timedelta(days=30)),
            "subTotal": money(self.total),
            "salesTax": "0.00",
            "total": money(self.total),
            "balance": money(self.total),
            "customer": {"id": self.customer_id, "name": self.customer_name},
            "businessUnit": {"id": self.business_unit_id, "name": self.business_unit_name},
            "termName": "Due Upon Receipt",
            "createdBy": "sandbox",
            "modifiedOn": fmt_dt(self.modified_on),
            "adjustmentToId": None,
            "job": {"id": self.job_id, "number": self.job_number, "type": self.job_type_name},
            "projectId": None,
            "commissionEligibilityDate": None,
            "items": [],
            "customFields": [],
        }
        if self.customer_address is not None:
            out["customerAddress"] = _address_response(self.customer_address)
        if self.location_address is not None:
            out["locationAddress"] = _address_response(self.location_address)
        return out


def _address_response(address: dict[str, Any]) -> dict[str, Any]:
    return {k: address.get(k) for k in ("street", "unit", "city", "state", "zip", "country")}


@dataclass
class BusinessUnit:
    id: int
    name: str
    created_on: datetime
    modified_on: datetime
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "active": self.active,
            "name": self.name,
            "officialName": self.name,
            "email": None,
            "currency": "USD",
            "phoneNumber": None,
            "invoiceHeader": None,
            "invoiceMessage": None,
            "defaultTaxRate": 0.0,
            "authorizationParagraph": None,
            "acknowledgementParagraph": None,
            "materialSku": None,
            "quickbooksClass": None,
            "accountCode": None,
            "franchiseId": None,
            "conceptCode": None,
            "corporateContractNumber": None,
            "createdOn": fmt_dt(self.created_on),
            "modifiedOn": fmt_dt(self.modified_on),
            "externalData": [],
        }


@dataclass
class JobType:
    id: int
    name: str
    created_on: datetime
    modified_on: datetime
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "modifiedOn": fmt_dt(self.modified_on), "externalData": []}


@dataclass
class Campaign:
    id: int
    name: str
    created_on: datetime
    modified_on: datetime
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "modifiedOn": fmt_dt(self.modified_on), "active": self.active}


# -- tenants -------------------------------------------------------------------------------------


@dataclass
class Tenant:
    tenant_id: str
    client_id: str
    client_secret: str
    app_keys: set[str]
    external_data_guid: str
    token_lifetime_s: float
    rate: float
    burst: int
    seeded: bool = False
    booking_provider_ids: list[int] = field(default_factory=list)
    business_units: dict[int, BusinessUnit] = field(default_factory=dict)
    job_types: dict[int, JobType] = field(default_factory=dict)
    campaigns: dict[int, Campaign] = field(default_factory=dict)
    bookings: dict[int, Booking] = field(default_factory=dict)
    customers: dict[int, Customer] = field(default_factory=dict)
    locations: dict[int, Location] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)
    invoices: dict[int, Invoice] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # live jti -> exp
    tokens_issued: int = 0
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    faults: TenantFaults = field(default_factory=TenantFaults)
    stats: RequestStats = field(default_factory=RequestStats)
    next_id: int = 0
    clock: Clock = field(default_factory=Clock)
    # called after a booking, job or invoice moved (sandboxes/servicetitan/webhooks.py sends it as a webhook)
    on_event: Callable[[Tenant, str, Any], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.next_id:
            # Ids distinct per tenant and per record (one sequence for all kinds catches mixed-up ids).
            self.next_id = (int(self.tenant_id) % 1000) * 1_000_000 + 10_001 if self.tenant_id.isdigit() else 10_001

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # -- identity / auth -------------------------------------------------------------------------
    def describe(self, *, with_secret: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "app_keys": sorted(self.app_keys),
            "external_data_guid": self.external_data_guid,
            "booking_provider_ids": list(self.booking_provider_ids),
            "business_unit_ids": sorted(self.business_units),
            "job_type_ids": sorted(self.job_types),
            "campaign_ids": sorted(self.campaigns),
            "token_lifetime_s": self.token_lifetime_s,
            "rate_limit": {"rate": self.rate, "burst": self.burst},
            "faults": self.faults.config.to_json(),
            "seeded": self.seeded,
        }
        if with_secret:
            out["client_secret"] = self.client_secret
        return out

    def token_live(self, jti: str, exp: float, now: float) -> bool:
        return now < exp and jti in self.tokens

    def revoke_tokens(self) -> int:
        n = len(self.tokens)
        self.tokens.clear()
        return n

    def bucket(self, app_key: str) -> TokenBucket:
        bucket = self.buckets.get(app_key)
        if bucket is None:
            bucket = self.buckets[app_key] = TokenBucket(self.rate, self.burst)
        return bucket

    def set_rate_limit(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        for bucket in self.buckets.values():
            bucket.reconfigure(rate, burst)

    # -- records ---------------------------------------------------------------------------------
    def clear_records(self) -> None:
        for store in (self.bookings, self.customers, self.locations, self.jobs, self.invoices):
            store.clear()

    def add_contacts(self, items: list[dict[str, Any]] | None) -> list[Contact]:
        return [Contact(self.new_id(), str(c["type"]), str(c["value"]), c.get("memo")) for c in items or []]

    def create_customer(
        self,
        *,
        name: str,
        type_: str,
        address: dict[str, Any],
        contacts: list[dict[str, Any]] | None,
        locations: list[dict[str, Any]],
        custom_fields: list[dict[str, Any]] | None = None,
        do_not_mail: bool = False,
        do_not_service: bool = False,
    ) -> tuple[Customer, list[Location]]:
        now = self.clock.now()
        customer = Customer(
            id=self.new_id(),
            name=name,
            type=type_,
            address=dict(address),
            created_on=now,
            modified_on=now,
            contacts=self.add_contacts(contacts),
            custom_fields=_custom_fields(custom_fields),
            do_not_mail=do_not_mail,
            do_not_service=do_not_service,
        )
        self.customers[customer.id] = customer
        created = [self.create_location(customer, loc, now=now) for loc in locations]
        return customer, created

    def create_location(self, customer: Customer, body: dict[str, Any], *, now: datetime | None = None) -> Location:
        now = now or self.clock.now()
        location = Location(
            id=self.new_id(),
            customer_id=customer.id,
            name=str(body["name"]),
            address=dict(body["address"]),
            created_on=now,
            modified_on=now,
            contacts=self.add_contacts(body.get("contacts")),
            custom_fields=_custom_fields(body.get("customFields")),
        )
        self.locations[location.id] = location
        customer.location_ids.append(location.id)
        # A contact given on a new location is copied to its customer (ServiceTitan CRM docs).
        for contact in location.contacts:
            if not any(c.type == contact.type and c.value == contact.value for c in customer.contacts):
                customer.contacts.append(Contact(self.new_id(), contact.type, contact.value, contact.memo))
        return location

    def create_job(
        self,
        *,
        customer_id: int,
        location_id: int,
        business_unit_id: int,
        job_type_id: int,
        priority: str,
        campaign_id: int,
        appointments: list[dict[str, datetime | list[int] | None]],
        summary: str | None = None,
        custom_fields: list[dict[str, Any]] | None = None,
        tag_type_ids: list[int] | None = None,
        external_data: dict[str, Any] | None = None,
        booking_id: int | None = None,
    ) -> Job:
        now = self.clock.now()
        appts = []
        for a in appointments:
            start, end = a["start"], a["end"]
            assert isinstance(start, datetime) and isinstance(end, datetime)
            ws, we, techs = a.get("arrivalWindowStart"), a.get("arrivalWindowEnd"), a.get("technicianIds")
            appts.append(
                Appointment(
                    id=self.new_id(),
                    start=start,
                    end=end,
                    arrival_window_start=ws if isinstance(ws, datetime) else None,
                    arrival_window_end=we if isinstance(we, datetime) else None,
                    technician_ids=list(techs) if isinstance(techs, list) else [],
                )
            )
        ext: ExternalData = {}
        if external_data:
            guid = str(external_data["applicationGuid"]).lower()
            ext[guid] = [{"key": str(i["key"]), "value": str(i["value"])} for i in external_data["externalData"]]
        job = Job(
            id=self.new_id(),
            customer_id=customer_id,
            location_id=location_id,
            business_unit_id=business_unit_id,
            job_type_id=job_type_id,
            priority=priority,
            campaign_id=campaign_id,
            created_on=now,
            modified_on=now,
            appointments=appts,
            summary=summary,
            custom_fields=[
                {"typeId": f["typeId"], "name": f"Custom field {f['typeId']}", "value": f.get("value") or ""}
                for f in custom_fields or []
            ],
            tag_type_ids=list(tag_type_ids or []),
            external_data=ext,
            booking_id=booking_id,
        )
        self.jobs[job.id] = job
        return job

    # -- lifecycle -------------------------------------------------------------------------------
    def advance_booking(self, booking: Booking, status: str, *, dismissing_reason_id: int | None = None) -> Booking:
        allowed = BOOKING_TRANSITIONS.get(booking.status, frozenset())
        if status not in allowed:
            raise TransitionError(f"booking {booking.id} is {booking.status}; it cannot become {status}")
        if status == "Converted":
            booking.job_id = self._convert(booking).id
        elif status == "Dismissed":
            booking.dismissing_reason_id = dismissing_reason_id or 1
        booking.status = status
        booking.modified_on = self.clock.now()
        self._event("booking", booking)
        return booking

    def _convert(self, booking: Booking) -> Job:
        address = booking.address or PLACEHOLDER_ADDRESS
        contacts = [{"type": c.type, "value": c.value, "memo": c.memo} for c in booking.contacts]
        customer, (location,) = self.create_customer(
            name=booking.name,
            type_=booking.customer_type or "Residential",
            address=address,
            contacts=contacts,
            locations=[{"name": booking.name, "address": address}],
        )
        now = self.clock.now()
        start = booking.start if booking.start > now else (now + timedelta(days=1)).replace(microsecond=0)
        return self.create_job(
            customer_id=customer.id,
            location_id=location.id,
            business_unit_id=booking.business_unit_id or min(self.business_units),
            job_type_id=booking.job_type_id or min(self.job_types),
            priority=booking.priority or "Normal",
            campaign_id=booking.campaign_id or min(self.campaigns),
            appointments=[{"start": start, "end": start + timedelta(hours=2)}],
            summary=booking.summary,
            booking_id=booking.id,
        )

    def advance_job(self, job: Job, status: str, *, total: Decimal | None = None) -> Job:
        if status not in JOB_STATUSES:
            raise TransitionError(f"unknown job status {status!r}")
        current = job.status
        if current in TERMINAL_JOB_STATUSES:
            raise TransitionError(f"job {job.id} is {current}; it cannot change any more")
        if status == current:
            raise TransitionError(f"job {job.id} is already {current}")
        if status in JOB_CHAIN and current in JOB_CHAIN and JOB_CHAIN.index(status) < JOB_CHAIN.index(current):
            raise TransitionError(f"job {job.id} is {current}; it cannot go back to {status}")
        now = self.clock.now()
        if status == "Completed":
            job.completed_on = now
            self._invoice(job, total if total is not None else Decimal("0"), now)
        job.status = status
        job.modified_on = now
        self._event("job", job)
        if status == "Completed" and job.invoice_id is not None:
            self._event("invoice", self.invoices[job.invoice_id])
        return job

    def adjust_invoice(self, invoice: Invoice, total: Decimal) -> Invoice:
        invoice.total = total
        invoice.modified_on = self.clock.now()
        self._event("invoice", invoice)
        return invoice

    def _event(self, kind: str, record: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(self, kind, record)
            except Exception:  # an event hook never fails the write (records hold homeowner data: no details)
                logging.getLogger(__name__).exception("sandbox event hook failed on %s", kind)

    def _invoice(self, job: Job, total: Decimal, now: datetime) -> Invoice:
        customer = self.customers.get(job.customer_id)
        location = self.locations.get(job.location_id)
        bu = self.business_units.get(job.business_unit_id)
        jt = self.job_types.get(job.job_type_id)
        invoice = Invoice(
            id=self.new_id(),
            job_id=job.id,
            job_number=job.number,
            job_type_name=jt.name if jt else "",
            customer_id=job.customer_id,
            customer_name=customer.name if customer else "",
            business_unit_id=job.business_unit_id,
            business_unit_name=bu.name if bu else "",
            total=total,
            summary=job.summary,
            invoice_date=now,
            created_on=now,
            modified_on=now,
            customer_address=customer.address if customer else None,
            location_address=location.address if location else None,
        )
        self.invoices[invoice.id] = invoice
        job.invoice_id = invoice.id
        return invoice

    # -- inspection ------------------------------------------------------------------------------
    def markers(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {
            "bookings": dict(Counter(b.external_id for b in self.bookings.values())),
        }
        for kind, store in (("customers", self.customers), ("locations", self.locations), ("jobs", self.jobs)):
            counts: Counter[str] = Counter()
            for record in store.values():
                seen = set()
                for items in record.external_data.values():
                    for item in items:
                        marker = f"{item['key']}={item['value']}"
                        if marker not in seen:
                            seen.add(marker)
                            counts[marker] += 1
            out[kind] = dict(counts)
        return out

    def inspect(self, *, with_timestamps: bool = False) -> dict[str, Any]:
        markers = self.markers()
        requests = {route: dict(statuses) for route, statuses in sorted(self.stats.requests.items())}
        by_status: Counter[str] = Counter()
        for statuses in self.stats.requests.values():
            by_status.update(statuses)
        out: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "requests": requests,
            "requests_by_status": dict(sorted(by_status.items())),
            "requests_total": sum(by_status.values()),
            "rate_limited": self.stats.rate_limited,
            "accepted_requests": len(self.stats.accepted),
            "max_requests_in_any_1s_window": self.stats.max_in_window(1.0),
            "rate_limit": {"rate": self.rate, "burst": self.burst},
            "tokens_issued": self.tokens_issued,
            "live_tokens": sum(1 for exp in self.tokens.values() if exp > time.time()),
            "faults": {
                "config": self.faults.config.to_json(),
                "counts": dict(self.faults.counts),
                "applicable_requests": self.faults.seq,
                "log": list(self.faults.log),
                "storm_active": self.faults.storm_until > time.monotonic(),
            },
            "records": {
                "bookings": len(self.bookings),
                "customers": len(self.customers),
                "locations": len(self.locations),
                "jobs": len(self.jobs),
                "invoices": len(self.invoices),
            },
            "bookings_by_status": dict(Counter(b.status for b in self.bookings.values())),
            "jobs_by_status": dict(Counter(j.status for j in self.jobs.values())),
            "markers": markers,
            "duplicates": {kind: {m: n for m, n in counts.items() if n > 1} for kind, counts in markers.items()},
        }
        if with_timestamps:
            first = self.stats.accepted[0] if self.stats.accepted else 0.0
            out["accepted_timestamps"] = [round(t - first, 6) for t in self.stats.accepted]
        return out


def _custom_fields(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        {"typeId": f["typeId"], "name": f"Custom field {f['typeId']}", "value": f.get("value")} for f in items or []
    ]


# -- the whole sandbox ---------------------------------------------------------------------------


class Sandbox:
    """All tenants plus process-wide settings; one instance per app."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.signer = TokenSigner()
        self.tenants: dict[str, Tenant] = {}
        self.office = OfficeConfig(**config.office.to_json())
        self.unattributed: Counter[str] = Counter()
        # every tenant's record moves go here (sandboxes/servicetitan/webhooks.py)
        self.on_event: Callable[[Tenant, str, Any], None] | None = None
        self.started_at = time.time()
        self._next_tenant = 900_000
        if config.seed_demo_tenants:
            for demo in DEMO_TENANTS:
                self._seed_demo(demo)

    # -- tenants ---------------------------------------------------------------------------------
    def tenant(self, tenant_id: str) -> Tenant | None:
        return self.tenants.get(tenant_id)

    def tenant_by_client(self, client_id: str) -> Tenant | None:
        for tenant in self.tenants.values():
            if secrets.compare_digest(tenant.client_id.encode(), client_id.encode()):
                return tenant
        return None

    def _seed_demo(self, demo: DemoTenant) -> Tenant:
        company = next((c for c in DEMO_COMPANIES if c.tenant == demo), None)
        label = company.name if company else f"Tenant {demo.tenant_id}"
        return self.create_tenant(
            tenant_id=demo.tenant_id,
            client_id=demo.client_id,
            client_secret=demo.client_secret,
            app_key=demo.app_key,
            external_data_guid=demo.external_data_guid,
            booking_provider_id=demo.booking_provider_id,
            business_unit_id=demo.business_unit_id,
            job_type_id=demo.job_type_id,
            campaign_id=demo.campaign_id,
            label=label,
            seeded=True,
        )

    def create_tenant(
        self,
        *,
        tenant_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        app_key: str | None = None,
        external_data_guid: str | None = None,
        booking_provider_id: int | None = None,
        business_unit_id: int | None = None,
        job_type_id: int | None = None,
        campaign_id: int | None = None,
        rate: float | None = None,
        burst: int | None = None,
        token_lifetime_s: float | None = None,
        label: str | None = None,
        seeded: bool = False,
    ) -> Tenant:
        if tenant_id is None:
            while str(self._next_tenant) in self.tenants:
                self._next_tenant += 1
            tenant_id = str(self._next_tenant)
            self._next_tenant += 1
        if tenant_id in self.tenants:
            raise ValueError(f"tenant {tenant_id} already exists")
        client_id = client_id or f"cid.sbx{tenant_id}.{secrets.token_hex(4)}"
        if self.tenant_by_client(client_id) is not None:
            raise ValueError(f"client id {client_id} is already used by another tenant")
        n = int(tenant_id) if tenant_id.isdigit() else len(self.tenants) + 1
        tenant = Tenant(
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret or f"cs1.{secrets.token_urlsafe(24)}",
            app_keys={app_key or f"ak1.{secrets.token_hex(12)}"},
            external_data_guid=(external_data_guid or _uuid4()).lower(),
            token_lifetime_s=token_lifetime_s if token_lifetime_s is not None else self.config.token_lifetime_s,
            rate=rate if rate is not None else self.config.rate,
            burst=burst if burst is not None else self.config.burst,
            seeded=seeded,
            clock=self.clock,
        )
        now = self.clock.now()
        label = label or f"Sandbox tenant {tenant_id}"
        tenant.booking_provider_ids.append(booking_provider_id or (n * 100 + 1))
        bu_id = business_unit_id or (n * 100 + 10)
        jt_id = job_type_id or (n * 100 + 20)
        cp_id = campaign_id or (n * 100 + 30)
        tenant.business_units[bu_id] = BusinessUnit(bu_id, f"{label} - Service", now, now)
        tenant.job_types[jt_id] = JobType(jt_id, "Referral - Service Call", now, now)
        tenant.campaigns[cp_id] = Campaign(cp_id, "TradeEngage Referrals", now, now)
        tenant.faults.configure(tenant.faults.config)
        tenant.on_event = self._tenant_event
        self.tenants[tenant_id] = tenant
        return tenant

    def reset(self) -> None:
        """Clear records, counters, faults and limits; drop runtime tenants; keep seeded ones (and their tokens)."""
        for tenant_id in [t for t, tenant in self.tenants.items() if not tenant.seeded]:
            del self.tenants[tenant_id]
        for tenant in self.tenants.values():
            tenant.clear_records()
            tenant.stats = RequestStats()
            tenant.faults.clear()
            tenant.buckets.clear()
            tenant.rate, tenant.burst = self.config.rate, self.config.burst
            tenant.token_lifetime_s = self.config.token_lifetime_s
            tenant.tokens_issued = 0
        self.unattributed.clear()
        self.office = OfficeConfig(**self.config.office.to_json())

    def _tenant_event(self, tenant: Tenant, kind: str, record: Any) -> None:
        if self.on_event is not None:
            self.on_event(tenant, kind, record)

    def office_tenants(self) -> list[Tenant]:
        wanted = self.office.tenants
        return [t for tid, t in sorted(self.tenants.items()) if wanted is None or tid in wanted]


def _uuid4() -> str:
    import uuid

    return str(uuid.uuid4())
