"""ServiceTitan behind the :class:`~integration_core.providers.base.Provider` protocol.

Two delivery modes per connection:

``booking`` (default)
    One ``POST …/booking-provider/{id}/bookings`` with ``externalId`` = routing id. Lookup:
    ``GET …/bookings?externalId=<routing id>``.

``job``
    Customer → location → job. The customer is de-duplicated: an active customer whose contacts hold the
    homeowner's phone or e-mail, or whose name and address are the homeowner's, is reused (the lowest id when
    several match, so a retry picks the same one); otherwise a customer is created with the service address as
    its location. A location with the service address is reused, or created. The job carries the marker in
    ``externalData`` (key ``tradeengageRoutingId``, the connection's application GUID).

    ServiceTitan's v2 definitions let no marker onto customers or locations, so a retry after a crash between
    steps finds the customer/location it created by the same de-duplication rules (they were created from the
    same homeowner data) and creates no second one.

    Lookup: ``GET /jobs?externalDataApplicationGuid&externalDataKey&externalDataValues``, and every hit is checked
    to carry the marker. ServiceTitan silently ignores query parameters it does not know; if the answer holds
    jobs without our marker the filter was ignored, and the lookup falls back to scanning the jobs of the
    homeowner's candidate customers for the marker. A lookup therefore never reports "absent" because a filter
    was dropped — that would create a duplicate.

Filters are only ever used to narrow candidates; whether a record matches is decided here, client-side.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx

from integration_core.providers import http
from integration_core.providers.base import (
    REDACTED,
    Capabilities,
    DeliveryPlan,
    DeliveryRequest,
    DeliveryResult,
    ExternalStatus,
    ExternalUpdate,
    Permanent,
    PlannedRequest,
    RequestGate,
    UpdatesBatch,
)
from integration_core.providers.servicetitan import mapping
from integration_core.providers.servicetitan.auth import DEFAULT_REFRESH_MARGIN, Clock, TokenCache
from integration_core.providers.servicetitan.client import DEFAULT_PAGE_SIZE, DEFAULT_TIMEOUT, ServiceTitanClient
from integration_core.providers.servicetitan.config import ConnectionConfig
from integration_core.providers.servicetitan.models import BookingResponse, CustomerResponse, JobResponse

__all__ = ["DEFAULT_UPDATES_LOOKBACK", "ServiceTitanProvider"]

log = logging.getLogger(__name__)

DEFAULT_UPDATES_LOOKBACK = timedelta(minutes=5)
"""Each status pull re-reads this much before its cursor: ServiceTitan lists changes 1-3 minutes late."""

MAX_CANDIDATES = 10
"""Customers verified per de-duplication query (a filter ServiceTitan ignored must not make us scan a tenant)."""

UPDATES_PAGE_SIZE = 500

T = TypeVar("T")


async def _take(iterator: AsyncGenerator[T, None], limit: int) -> list[T]:
    items: list[T] = []
    async with aclosing(iterator) as it:
        async for item in it:
            items.append(item)
            if len(items) >= limit:
                break
    return items


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _marker_uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class ServiceTitanProvider(http.ClientOwner):
    """The ServiceTitan provider for one connection (one tenant, one delivery mode).

    Args:
        config: the connection.
        client: a ready client (tests); otherwise one is built from the remaining arguments.
        http_client / transport / timeout / token_cache / clock / token_refresh_margin / gate: passed to
            :class:`ServiceTitanClient` when ``client`` is not given.
        now: wall clock (UTC) for appointment placement; injectable for tests.
        updates_lookback: overlap re-read before the updates cursor.
    """

    def __init__(
        self,
        config: ConnectionConfig,
        *,
        client: ServiceTitanClient | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        token_cache: TokenCache | None = None,
        clock: Clock = time.monotonic,
        token_refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        gate: RequestGate | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        updates_lookback: timedelta = DEFAULT_UPDATES_LOOKBACK,
    ) -> None:
        self.config = config
        self.client: ServiceTitanClient = client or ServiceTitanClient(
            config,
            http_client=http_client,
            transport=transport,
            timeout=timeout,
            token_cache=token_cache,
            clock=clock,
            token_refresh_margin=token_refresh_margin,
            gate=gate,
        )
        self._now = now
        self._lookback = updates_lookback

    def __repr__(self) -> str:
        return f"ServiceTitanProvider(tenant={self.config.tenant_id!r}, mode={self.config.delivery_mode!r})"

    def plan_delivery(self, request: DeliveryRequest, *, lookup: bool, now: datetime) -> DeliveryPlan:
        """The requests `find_existing` (when `lookup`) and `deliver` would send, for the dry run."""
        return plan_delivery(self.config, request, lookup=lookup, now=now)

    @property
    def capabilities(self) -> Capabilities:
        booking = self.config.delivery_mode == "booking"
        return Capabilities(
            rate_per_second=self.config.rate_limit_per_second,
            rate_burst=self.config.rate_limit_burst,
            auth_kind="oauth2_client_credentials",
            work_item_kind="booking" if booking else "job",
            supports_lookup=True,
            requests_per_delivery=1 if booking else 8,
        )

    def _require_settings(self) -> None:
        missing = self.config.missing_settings()
        if missing:
            raise Permanent(
                f"connection settings incomplete for delivery_mode={self.config.delivery_mode}",
                code="misconfigured",
                field_errors=missing,
            )

    @property
    def _guid(self) -> str:
        assert self.config.external_data_guid is not None  # _require_settings ran
        return str(self.config.external_data_guid)

    @property
    def _booking_provider(self) -> int:
        assert self.config.booking_provider_id is not None  # _require_settings ran
        return self.config.booking_provider_id

    # ----------------------------------------------------------------------------------------------------------
    # check_connection
    # ----------------------------------------------------------------------------------------------------------

    async def check_connection(self) -> None:
        """Settings complete, token obtainable, a cheap read works, and the configured ids exist.

        Raises:
            Permanent: ``misconfigured`` (with field errors) for missing or unknown settings.
            AuthFailed: credentials, app key or tenant rejected.
            Retryable / RateLimited: ServiceTitan unavailable or throttling.
        """
        self._require_settings()
        await self.client.token()
        await self.client.first_business_unit_page()
        if self.config.delivery_mode == "booking":
            # Proves the booking-provider id and the bookings scope; lists at most one booking.
            await self.client.get_page(
                self.client.bookings_url(self._booking_provider),
                BookingResponse,
                {"page": 1, "pageSize": 1},
                operation="list_bookings",
            )
            return
        unknown: dict[str, list[str]] = {}
        checks = (
            ("business_unit_id", self.config.business_unit_id, self.client.list_business_units),
            ("job_type_id", self.config.job_type_id, self.client.list_job_types),
            ("campaign_id", self.config.campaign_id, self.client.list_campaigns),
        )
        for name, ident, lister in checks:
            assert ident is not None
            found = await _take(lister(ids=[ident]), 1)
            if not any(item.id == ident for item in found):
                unknown[name] = [f"no active record with id {ident} in this ServiceTitan tenant"]
        if unknown:
            raise Permanent("configured ids not found in ServiceTitan", code="misconfigured", field_errors=unknown)

    # ----------------------------------------------------------------------------------------------------------
    # find_existing
    # ----------------------------------------------------------------------------------------------------------

    async def find_existing(self, request: DeliveryRequest) -> DeliveryResult | None:
        """The routing's record at ServiceTitan, found by its marker, or ``None`` (safe to deliver).

        Raises:
            Permanent: ``lookup_filter_ignored`` if ServiceTitan ignored the booking ``externalId`` filter
                (we cannot tell whether the booking exists, so we must not deliver again).
        """
        self._require_settings()
        if self.config.delivery_mode == "booking":
            booking = await self._find_booking(request.marker)
            return None if booking is None else self._booking_result(booking, adopted=True)
        job = await self._find_job(request)
        return None if job is None else self._job_result(job, adopted=True)

    async def _find_booking(self, marker: str) -> BookingResponse | None:
        hits: list[BookingResponse] = []
        async with aclosing(
            self.client.list_bookings(self._booking_provider, external_id=marker, page_size=50)
        ) as bookings:
            async for booking in bookings:
                if booking.external_id != marker:
                    raise Permanent(
                        "find_booking: ServiceTitan ignored the externalId filter; cannot look bookings up",
                        code="lookup_filter_ignored",
                    )
                hits.append(booking)
        if len(hits) > 1:
            log.warning("routing %s has %d bookings at ServiceTitan; adopting the oldest", marker, len(hits))
        return min(hits, key=lambda b: b.id) if hits else None

    async def _find_job(self, request: DeliveryRequest) -> JobResponse | None:
        marker = request.marker
        hits: list[JobResponse] = []
        filter_ignored = False
        async with aclosing(
            self.client.list_jobs(
                external_data_guid=self._guid,
                external_data_key=mapping.MARKER_KEY,
                external_data_values=[marker],
                page_size=50,
            )
        ) as jobs:
            async for job in jobs:
                if job.external_value(mapping.MARKER_KEY) != marker:
                    filter_ignored = True
                    break
                hits.append(job)
        if hits:
            return min(hits, key=lambda j: j.id)
        if not filter_ignored:
            return None
        # The externalData filter is not supported here: look through the jobs of every customer this
        # homeowner could have been filed under (the same candidates deliver() would reuse).
        for customer in await self._matching_customers(request):
            async with aclosing(self.client.list_jobs(customer_id=customer.id, external_data_guid=self._guid)) as jobs:
                async for job in jobs:
                    if job.external_value(mapping.MARKER_KEY) == marker:
                        return job
        return None

    # ----------------------------------------------------------------------------------------------------------
    # deliver
    # ----------------------------------------------------------------------------------------------------------

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Create the routing's record. Does not look for an earlier attempt's record: call
        :meth:`find_existing` first whenever an earlier attempt's outcome is unknown."""
        self._require_settings()
        sensitive = request.sensitive_values()
        if self.config.delivery_mode == "booking":
            booking = await self.client.create_booking(
                self._booking_provider, mapping.booking_body(request, self.config), sensitive=sensitive
            )
            return self._booking_result(booking, adopted=False)

        customers = await self._matching_customers(request)
        if customers:
            customer_id = customers[0].id
            location_id = await self._location_for(customer_id, request)
        else:
            created = await self.client.create_customer(mapping.customer_body(request), sensitive=sensitive)
            customer_id = created.id
            location_id = created.locations[0].id if created.locations else None
        if location_id is None:
            location = await self.client.create_location(
                mapping.location_body(request, customer_id), sensitive=sensitive
            )
            location_id = location.id
        body = mapping.job_body(request, self.config, customer_id=customer_id, location_id=location_id, now=self._now())
        job = await self.client.create_job(body, sensitive=sensitive)
        return self._job_result(job, adopted=False)

    async def _location_for(self, customer_id: int, request: DeliveryRequest) -> int | None:
        """The customer's active location at the service address, if any."""
        async with aclosing(self.client.list_locations(customer_id=customer_id)) as locations:
            async for location in locations:
                if location.customer_id != customer_id or not location.active:
                    continue
                address = location.address
                if mapping.same_address(address.street, address.unit, address.zip, request):
                    return location.id
        return None

    async def _contact_values(self, customer_id: int) -> list[str] | None:
        """The customer's contact values, or ``None`` when ServiceTitan will not list them (404)."""
        try:
            return [c.value.strip() async for c in self.client.list_customer_contacts(customer_id)]
        except Permanent as exc:
            if exc.http_status == 404:
                return None
            raise

    async def _matching_customers(self, request: DeliveryRequest) -> list[CustomerResponse]:
        """Active customers this homeowner already is, lowest id first.

        A customer matches when one of its contacts holds the homeowner's phone or e-mail, or when its name and
        address are the homeowner's. ServiceTitan's ``phone`` and ``name`` filters only narrow the candidates; the
        contacts are then checked here. Where ServiceTitan does not list a customer's contacts, a candidate of
        the documented ``phone`` filter is taken as matching, and e-mail alone cannot match.
        """
        phone = mapping.normalize_phone(request.homeowner_phone)
        email = (request.homeowner_email or "").strip().casefold()
        name = request.homeowner_name.strip()
        matched: dict[int, CustomerResponse] = {}

        def usable(customer: CustomerResponse) -> bool:
            return customer.active and customer.merged_to_id is None and customer.id not in matched

        if phone:
            for customer in await _take(self.client.list_customers(phone=phone), MAX_CANDIDATES):
                if not usable(customer):
                    continue
                values = await self._contact_values(customer.id)
                if values is None or any(mapping.normalize_phone(v) == phone for v in values):
                    matched[customer.id] = customer
        for customer in await _take(self.client.list_customers(name=name), MAX_CANDIDATES * 2):
            if not usable(customer):
                continue
            address = customer.address
            if (
                address is not None
                and " ".join(customer.name.casefold().split()) == " ".join(name.casefold().split())
                and mapping.same_address(address.street, address.unit, address.zip, request)
            ):
                matched[customer.id] = customer
            elif email:
                values = await self._contact_values(customer.id)
                if values is not None and any(v.casefold() == email for v in values):
                    matched[customer.id] = customer
        return sorted(matched.values(), key=lambda c: c.id)

    # ----------------------------------------------------------------------------------------------------------
    # fetch_updates
    # ----------------------------------------------------------------------------------------------------------

    async def fetch_updates(self, since: datetime) -> UpdatesBatch:
        """Bookings and jobs modified at or after ``since`` (minus the lookback), across all pages.

        Yields an update for: every booking under our booking provider; every job carrying our marker
        (``kind="job"``); every job converted from one of our bookings (``kind="booking"``, ``source="job"``).
        Completed jobs get their revenue from their invoices; the completed jobs of invoices modified since
        then are read again, so an invoice edited after completion moves the revenue. Booking updates come
        before job updates, so a converted booking's job status is applied last. The cursor is the latest
        ``modifiedOn`` seen (never earlier than ``since``); duplicates across pulls are expected and harmless.
        """
        since = _utc(since)
        query_from = since - self._lookback
        cursor = since
        updates: list[ExternalUpdate] = []
        bp = self.config.booking_provider_id
        guid = str(self.config.external_data_guid) if self.config.external_data_guid else None

        if bp is not None:
            async with aclosing(
                self.client.list_bookings(
                    bp, modified_on_or_after=query_from, sort="+ModifiedOn", page_size=UPDATES_PAGE_SIZE
                )
            ) as bookings:
                async for booking in bookings:
                    cursor = max(cursor, _utc(booking.modified_on))
                    update = self._booking_update(booking)
                    if update is not None:
                        updates.append(update)

        converted: list[JobResponse] = []
        seen_jobs: set[int] = set()

        async def consider(job: JobResponse) -> None:
            seen_jobs.add(job.id)
            marker = _marker_uuid(job.external_value(mapping.MARKER_KEY)) if guid else None
            if marker is not None:
                update = await self._job_update(job, kind="job", external_id=str(job.id), marker=marker)
                if update is not None:
                    updates.append(update)
            elif job.booking_id is not None and bp is not None:
                converted.append(job)

        async with aclosing(
            self.client.list_jobs(
                modified_on_or_after=query_from,
                external_data_guid=guid,
                sort="+ModifiedOn",
                page_size=UPDATES_PAGE_SIZE,
            )
        ) as jobs:
            async for job in jobs:
                cursor = max(cursor, _utc(job.modified_on))
                await consider(job)

        # An invoice edited (or added) after its job completed does not touch the job's modifiedOn: the jobs of
        # invoices modified since the last pull are read again, so that their revenue follows.
        invoiced: set[int] = set()
        async with aclosing(
            self.client.list_invoices(modified_on_or_after=query_from, page_size=UPDATES_PAGE_SIZE)
        ) as invoices:
            async for invoice in invoices:
                if invoice.modified_on is not None:
                    cursor = max(cursor, _utc(invoice.modified_on))
                if invoice.job is not None and invoice.job.id not in seen_jobs:
                    invoiced.add(invoice.job.id)
        if invoiced:
            async with aclosing(
                self.client.list_jobs(ids=sorted(invoiced), external_data_guid=guid, page_size=UPDATES_PAGE_SIZE)
            ) as jobs:
                async for job in jobs:
                    if mapping.job_status(job.job_status) == "completed":
                        await consider(job)

        if converted:
            ours = {
                b.id: b async for b in self.client.list_bookings(bp or 0, ids=[j.booking_id or 0 for j in converted])
            }
            for job in converted:
                source_booking = ours.get(job.booking_id or 0)
                if source_booking is None:
                    continue  # converted from another booking provider's booking
                update = await self._job_update(
                    job,
                    kind="booking",
                    external_id=str(source_booking.id),
                    marker=_marker_uuid(source_booking.external_id),
                    refs={"booking_id": source_booking.id},
                )
                if update is not None:
                    updates.append(update)
        return UpdatesBatch(updates=updates, cursor=cursor)

    def _booking_update(self, booking: BookingResponse) -> ExternalUpdate | None:
        status = mapping.booking_status(booking.status)
        if status is None:
            log.warning("booking %s has an unknown status; skipped", booking.id)
            return None
        refs: dict[str, int | str] = {"booking_id": booking.id}
        if booking.job_id is not None:
            refs["job_id"] = booking.job_id
        return ExternalUpdate(
            kind="booking",
            external_id=str(booking.id),
            external_status=status,
            modified_on=_utc(booking.modified_on),
            marker=_marker_uuid(booking.external_id),
            refs=refs,
        )

    async def _job_update(
        self,
        job: JobResponse,
        *,
        kind: str,
        external_id: str,
        marker: uuid.UUID | None,
        refs: dict[str, int | str] | None = None,
    ) -> ExternalUpdate | None:
        status: ExternalStatus | None = mapping.job_status(job.job_status)
        if status is None:
            log.warning("job %s has an unknown status; skipped", job.id)
            return None
        revenue = None
        if status == "completed":
            revenue = mapping.revenue_from_invoices(
                [invoice async for invoice in self.client.list_invoices(job_id=job.id, page_size=DEFAULT_PAGE_SIZE)]
            )
        return ExternalUpdate(
            kind="booking" if kind == "booking" else "job",
            external_id=external_id,
            external_status=status,
            modified_on=_utc(job.modified_on),
            marker=marker,
            completed_at=_utc(job.completed_on) if job.completed_on else None,
            revenue=revenue,
            refs={**(refs or {}), "job_id": job.id, "job_number": job.job_number},
            source="job",
        )

    # ----------------------------------------------------------------------------------------------------------
    # results
    # ----------------------------------------------------------------------------------------------------------

    def _booking_result(self, booking: BookingResponse, *, adopted: bool) -> DeliveryResult:
        refs: dict[str, int | str] = {"booking_id": booking.id, "booking_provider_id": booking.booking_provider_id}
        if booking.job_id is not None:
            refs["job_id"] = booking.job_id
        return DeliveryResult(external_id=str(booking.id), kind="booking", refs=refs, adopted=adopted)

    @staticmethod
    def _job_result(job: JobResponse, *, adopted: bool) -> DeliveryResult:
        refs: dict[str, int | str] = {
            "customer_id": job.customer_id,
            "location_id": job.location_id,
            "job_id": job.id,
            "job_number": job.job_number,
        }
        return DeliveryResult(external_id=str(job.id), kind="job", refs=refs, adopted=adopted)


# --------------------------------------------------------------------------------------------------------------
# Dry run: the requests a delivery would send, rendered by the same mapping functions the client serialises
# --------------------------------------------------------------------------------------------------------------

CUSTOMER_ID_PLACEHOLDER = "{customerId}"
LOCATION_ID_PLACEHOLDER = "{locationId}"
_HEADERS = {"Authorization": f"Bearer {REDACTED}", "ST-App-Key": REDACTED, "Content-Type": "application/json"}
_GET_HEADERS = {k: v for k, v in _HEADERS.items() if k != "Content-Type"}


def _body(model: Any) -> dict[str, Any]:
    # exactly as ServiceTitanClient.request serialises bodies
    body: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def plan_delivery(config: ConnectionConfig, request: DeliveryRequest, *, lookup: bool, now: datetime) -> DeliveryPlan:
    """What `ServiceTitanProvider.find_existing`/`deliver` would send for `request` (no credentials needed)."""
    from integration_core.providers.servicetitan.client import api_base_for

    base = api_base_for(config)

    def path(module: str, resource: str) -> str:
        return f"{base}/{module}/v2/tenant/{config.tenant_id}/{resource}"

    planned: list[PlannedRequest] = []
    if config.delivery_mode == "booking":
        url = path("crm", f"booking-provider/{config.booking_provider_id}/bookings")
        if lookup:
            planned.append(
                PlannedRequest(
                    "find_existing",
                    "GET",
                    url,
                    "first: an earlier attempt's outcome is unknown, so the booking is looked up by its marker",
                    params={"externalId": request.marker, "page": "1", "pageSize": "50"},
                    headers=dict(_GET_HEADERS),
                )
            )
        planned.append(
            PlannedRequest(
                "create_booking",
                "POST",
                url,
                "only if the lookup found nothing" if lookup else "always",
                headers=dict(_HEADERS),
                body=_body(mapping.booking_body(request, config)),
            )
        )
        return DeliveryPlan(planned)

    if lookup:
        planned.append(
            PlannedRequest(
                "find_existing",
                "GET",
                path("jpm", "jobs"),
                "first: an earlier attempt's outcome is unknown, so the job is looked up by its externalData marker",
                params={
                    "externalDataApplicationGuid": str(config.external_data_guid),
                    "externalDataKey": mapping.MARKER_KEY,
                    "externalDataValues": request.marker,
                },
                headers=dict(_GET_HEADERS),
            )
        )
    then = "if the lookup found nothing: " if lookup else ""
    planned.append(
        PlannedRequest(
            "find_customer",
            "GET",
            path("crm", "customers"),
            f"{then}look for the homeowner among existing customers (by phone, then by name and address or e-mail)",
            headers=dict(_GET_HEADERS),
        )
    )
    planned.append(
        PlannedRequest(
            "create_customer",
            "POST",
            path("crm", "customers"),
            f"{then}only if no existing customer matches (the service address becomes its location)",
            headers=dict(_HEADERS),
            body=_body(mapping.customer_body(request)),
        )
    )
    location = _body(mapping.location_body(request, 0))
    location["customerId"] = CUSTOMER_ID_PLACEHOLDER
    planned.append(
        PlannedRequest(
            "create_location",
            "POST",
            path("crm", "locations"),
            f"{then}only if the matched customer has no active location at the service address",
            headers=dict(_HEADERS),
            body=location,
        )
    )
    job = _body(mapping.job_body(request, config, customer_id=0, location_id=0, now=now))
    job["customerId"] = CUSTOMER_ID_PLACEHOLDER
    job["locationId"] = LOCATION_ID_PLACEHOLDER
    planned.append(
        PlannedRequest(
            "create_job",
            "POST",
            path("jpm", "jobs"),
            "only if the lookup found nothing" if lookup else "always",
            headers=dict(_HEADERS),
            body=job,
        )
    )
    return DeliveryPlan(
        planned,
        {
            CUSTOMER_ID_PLACEHOLDER: "id of the matched or created customer",
            LOCATION_ID_PLACEHOLDER: "id of the matched or created location",
        },
    )
