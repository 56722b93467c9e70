"""Housecall Pro behind the :class:`~integration_core.providers.base.Provider` protocol.

Two delivery modes per connection, both for the homeowner's customer (found again or created with the service
address) and carrying the marker tag ``tradeengage:<routing id>`` (``mapping.py``):

``lead`` (default)
    ``POST /leads`` with the customer and address ids; the office converts the lead to a job (the job inherits
    the lead's tags, so the job's status and revenue come back under the same marker).

``job``
    ``POST /jobs`` without a schedule (``needs scheduling``): the office books the visit.

Customer de-duplication: a customer whose mobile/home/work number is the homeowner's phone, else whose e-mail is
the homeowner's, else whose name is the homeowner's and who has the service address; ``GET /customers?q=`` only
narrows the candidates, every match is decided here. Among several, the oldest (then lowest id) wins, so a retry
picks the same one, and a retry after a crash between steps finds the customer an earlier attempt created by the
same rules (no second customer). The address is the matched customer's address at the service address, or a new
one (``POST /customers/{id}/addresses``).

Lookup (Housecall Pro has no idempotency keys and no filter by tag value):
1. the leads/jobs of the homeowner's candidate customers (``customer_id`` filter), checked for the marker tag;
2. if none carries it, a bounded scan: our leads (``lead_source`` filter) newest first, at most
   :data:`LEAD_SCAN_LIMIT`; or the jobs created since the referral (``sort_by=created_at``, newest first, until
   a job older than the referral minus :data:`JOB_SCAN_MARGIN`).
Filters only narrow candidates; whether a record is the routing's is decided by its tag, here. A filter the
server ignored (records of another customer in a ``customer_id`` answer) makes step 2 run, never "absent".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
    WorkItemKind,
)
from integration_core.providers.housecallpro import mapping
from integration_core.providers.housecallpro.client import DEFAULT_TIMEOUT, HousecallProClient
from integration_core.providers.housecallpro.config import HousecallProSettings
from integration_core.providers.housecallpro.models import Customer, Job, Lead, parse_timestamp

__all__ = [
    "DEFAULT_UPDATES_LOOKBACK",
    "JOB_SCAN_MARGIN",
    "LEAD_SCAN_LIMIT",
    "HousecallProProvider",
    "plan_delivery",
]

log = logging.getLogger(__name__)

DEFAULT_UPDATES_LOOKBACK = timedelta(minutes=5)
"""Each status pull re-reads this much before its cursor (clock skew, records changed while we paged)."""
LEAD_SCAN_LIMIT = 1000
"""Most recent leads of our lead source a lookup scans when the homeowner's customers hold none of ours."""
JOB_SCAN_MARGIN = timedelta(days=1)
"""A lookup's job scan stops at jobs created this long before the referral (clock skew between the systems)."""
MAX_CANDIDATES = 25
"""Customers one search returns for verification (``q`` is a fuzzy search)."""
SCAN_PAGE_SIZE = 100

T = TypeVar("T")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _created_key(customer: Customer) -> tuple[datetime, str]:
    return (parse_timestamp(customer.created_at) or datetime.max.replace(tzinfo=UTC), customer.id)


class HousecallProProvider(http.ClientOwner):
    """The Housecall Pro provider for one connection (one company's API key, one delivery mode).

    Args:
        config: the connection.
        client: a ready client (tests); otherwise one is built from ``http_client``/``transport``/``timeout``/
            ``gate``.
        updates_lookback: overlap re-read before the updates cursor.
    """

    def __init__(
        self,
        config: HousecallProSettings,
        *,
        client: HousecallProClient | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        gate: RequestGate | None = None,
        updates_lookback: timedelta = DEFAULT_UPDATES_LOOKBACK,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.client: HousecallProClient = client or HousecallProClient(
            config, http_client=http_client, transport=transport, timeout=timeout, gate=gate
        )
        self._lookback = updates_lookback
        self._now = now

    def __repr__(self) -> str:
        return f"HousecallProProvider(company={self.config.company_id!r}, mode={self.config.delivery_mode!r})"

    @property
    def _kind(self) -> WorkItemKind:
        return "lead" if self.config.delivery_mode == "lead" else "job"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            rate_per_second=self.config.rate_limit_per_second,
            rate_burst=self.config.rate_limit_burst,
            auth_kind="api_key",
            work_item_kind=self._kind,
            supports_lookup=True,
            # up to three customer searches, a customer or an address, the lead or job
            requests_per_delivery=5,
        )

    def plan_delivery(self, request: DeliveryRequest, *, lookup: bool, now: datetime) -> DeliveryPlan:
        """The requests :meth:`find_existing` (when ``lookup``) and :meth:`deliver` would send, for the dry run."""
        return plan_delivery(self.config, request, lookup=lookup, now=now)

    # ----------------------------------------------------------------------------------------------------------
    # check_connection
    # ----------------------------------------------------------------------------------------------------------

    async def check_connection(self) -> None:
        """The key is accepted and the records of the delivery mode are readable (two one-item reads).

        ``GET /lead_sources`` proves the key; ``GET /leads`` (lead mode) or ``GET /jobs`` (job mode) proves access
        to what we create, and a record it returns names its company: another company than ``company_id`` is a
        mis-configured connection.

        Raises:
            AuthFailed: the key is rejected (401) or lacks access (403: e.g. not on the MAX plan).
            Permanent: the key belongs to another company than ``company_id``.
            Retryable / RateLimited: Housecall Pro unavailable or throttling.
        """
        await self.client.request(
            "GET", "/lead_sources", operation="list_lead_sources", params={"page": 1, "page_size": 1}
        )
        path, key = ("/leads", "leads") if self.config.delivery_mode == "lead" else ("/jobs", "jobs")
        data = await self.client.request("GET", path, operation=f"list_{key}", params={"page": 1, "page_size": 1})
        records = data.get(key) if isinstance(data, dict) else None
        company = records[0].get("company_id") if isinstance(records, list) and records else None
        if isinstance(company, str) and company and company != self.config.company_id:
            raise Permanent(
                "the API key belongs to another Housecall Pro company than the connection's company_id",
                code="misconfigured",
                field_errors={"company_id": ["does not match the company of the API key"]},
            )

    # ----------------------------------------------------------------------------------------------------------
    # find_existing
    # ----------------------------------------------------------------------------------------------------------

    async def find_existing(self, request: DeliveryRequest) -> DeliveryResult | None:
        """The routing's lead (lead mode) or job (job mode), found by its marker tag; ``None`` if there is none."""
        customers = await self._matching_customers(request)
        if self.config.delivery_mode == "lead":
            lead = await self._find_lead(request.marker, customers)
            return None if lead is None else self._lead_result(lead, adopted=True)
        job = await self._find_job(request, customers)
        return None if job is None else self._job_result(job, adopted=True)

    async def _find_lead(self, marker: str, customers: list[Customer]) -> Lead | None:
        for customer in customers:
            async with aclosing(self.client.list_leads(customer_id=customer.id, page_size=SCAN_PAGE_SIZE)) as leads:
                async for lead in leads:
                    if lead.customer is not None and lead.customer.id not in (None, customer.id):
                        break  # the customer_id filter was ignored: scan below
                    if mapping.has_marker(lead.tags, marker):
                        return lead
        seen = 0
        async with aclosing(
            self.client.list_leads(
                lead_source=self.config.lead_source,
                sort_by="created_at",
                sort_direction="desc",
                page_size=SCAN_PAGE_SIZE,
            )
        ) as leads:
            async for lead in leads:
                if mapping.has_marker(lead.tags, marker):
                    return lead
                seen += 1
                if seen >= LEAD_SCAN_LIMIT:
                    break
        return None

    async def _find_job(self, request: DeliveryRequest, customers: list[Customer]) -> Job | None:
        marker = request.marker
        for customer in customers:
            async with aclosing(self.client.list_jobs(customer_id=customer.id, page_size=SCAN_PAGE_SIZE)) as jobs:
                async for job in jobs:
                    if job.customer is not None and job.customer.id not in (None, customer.id):
                        break  # the customer_id filter was ignored: scan below
                    if mapping.has_marker(job.tags, marker):
                        return job
        oldest = _utc(request.created_at) - JOB_SCAN_MARGIN
        async with aclosing(
            self.client.list_jobs(sort_by="created_at", sort_direction="desc", page_size=SCAN_PAGE_SIZE)
        ) as jobs:
            async for job in jobs:
                if mapping.has_marker(job.tags, marker):
                    return job
                created = parse_timestamp(job.created_at)
                if created is not None and created < oldest:
                    break
        return None

    # ----------------------------------------------------------------------------------------------------------
    # deliver
    # ----------------------------------------------------------------------------------------------------------

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Create the routing's lead or job (and the customer/address it needs). Does not look for an earlier
        attempt's record: call :meth:`find_existing` first whenever an earlier attempt's outcome is unknown."""
        sensitive = request.sensitive_values()
        customers = await self._matching_customers(request)
        if customers:
            customer = customers[0]
            address_id = next(
                (a.id for a in customer.addresses if mapping.same_address(a.street, a.street_line_2, a.zip, request)),
                None,
            )
            if address_id is None:
                address = await self.client.create_address(
                    customer.id, mapping.address_body(request), sensitive=sensitive
                )
                address_id = address.id
        else:
            customer = await self.client.create_customer(
                mapping.customer_body(request, self.config), sensitive=sensitive
            )
            address_id = next(
                (a.id for a in customer.addresses if mapping.same_address(a.street, a.street_line_2, a.zip, request)),
                customer.addresses[0].id if customer.addresses else None,
            )
            if address_id is None:
                address = await self.client.create_address(
                    customer.id, mapping.address_body(request), sensitive=sensitive
                )
                address_id = address.id
        if self.config.delivery_mode == "lead":
            lead = await self.client.create_lead(
                mapping.lead_body(request, self.config, customer_id=customer.id, address_id=address_id),
                sensitive=sensitive,
            )
            return self._lead_result(lead, adopted=False)
        job = await self.client.create_job(
            mapping.job_body(request, self.config, customer_id=customer.id, address_id=address_id),
            sensitive=sensitive,
        )
        return self._job_result(job, adopted=False)

    async def _matching_customers(self, request: DeliveryRequest) -> list[Customer]:
        """Customers this homeowner already is, best first: by phone, else e-mail, else name and address."""
        sensitive = request.sensitive_values()
        phone = mapping.normalize_phone(request.homeowner_phone)
        if phone:
            found = [
                c
                for c in await self.client.search_customers(phone, page_size=MAX_CANDIDATES, sensitive=sensitive)
                if any(mapping.normalize_phone(n) == phone for n in c.numbers)
            ]
            if found:
                return sorted(found, key=_created_key)
        email = (request.homeowner_email or "").strip()
        if email:
            found = [
                c
                for c in await self.client.search_customers(email, page_size=MAX_CANDIDATES, sensitive=sensitive)
                if (c.email or "").strip().casefold() == email.casefold()
            ]
            if found:
                return sorted(found, key=_created_key)
        name = " ".join(request.homeowner_name.split())
        found = [
            c
            for c in await self.client.search_customers(name, page_size=MAX_CANDIDATES, sensitive=sensitive)
            if mapping.same_name(c.name, name)
            and any(mapping.same_address(a.street, a.street_line_2, a.zip, request) for a in c.addresses)
        ]
        return sorted(found, key=_created_key)

    # ----------------------------------------------------------------------------------------------------------
    # fetch_updates
    # ----------------------------------------------------------------------------------------------------------

    async def fetch_updates(self, since: datetime) -> UpdatesBatch:
        """Our leads and jobs changed at or after ``since`` (minus the lookback).

        - Jobs, newest ``updated_at`` first until one is older than the window: every job carrying a marker tag
          (ours in job mode; in lead mode the job the office converted our lead into, which inherits its tags)
          → its work status; a completed job's revenue from its invoices.
        - Lost leads of our lead source (``status=lost``), newest ``lost_at`` first until one is older than the
          window → ``dismissed``. (An open lead has nothing to report; a won lead reports through its job.)
        - Invoices paid within the window (``paid_at_min``): their jobs are read again, so revenue invoiced or
          paid after the job completed follows.
        The cursor is the latest timestamp seen (never earlier than ``since``); re-reads are harmless.
        """
        since = _utc(since)
        query_from = since - self._lookback
        cursor = since
        updates: list[ExternalUpdate] = []
        seen_jobs: set[str] = set()

        async with aclosing(
            self.client.list_jobs(sort_by="updated_at", sort_direction="desc", page_size=SCAN_PAGE_SIZE)
        ) as jobs:
            async for job in jobs:
                updated = parse_timestamp(job.updated_at)
                if updated is not None and updated < query_from:
                    break
                if updated is not None:
                    cursor = max(cursor, updated)
                seen_jobs.add(job.id)
                update = await self._job_update(job)
                if update is not None:
                    updates.append(update)

        async with aclosing(
            self.client.list_leads(
                lead_source=self.config.lead_source,
                status="lost",
                sort_by="updated_at",
                sort_direction="desc",
                page_size=SCAN_PAGE_SIZE,
            )
        ) as leads:
            async for lead in leads:
                lost_at = parse_timestamp(lead.lost_at)
                if lost_at is not None and lost_at < query_from:
                    break
                marker = mapping.marker_from_tags(lead.tags)
                if marker is None or lead.status != "lost":
                    continue
                modified = lost_at or since
                cursor = max(cursor, modified)
                updates.append(
                    ExternalUpdate(
                        kind="lead",
                        external_id=lead.id,
                        external_status="dismissed",
                        modified_on=modified,
                        marker=marker,
                        refs={"lead_id": lead.id},
                    )
                )

        async with aclosing(
            self.client.list_invoices(paid_at_min=query_from.strftime("%Y-%m-%dT%H:%M:%SZ"), page_size=SCAN_PAGE_SIZE)
        ) as invoices:
            paid_jobs = [inv.job_id async for inv in invoices if inv.job_id and inv.job_id not in seen_jobs]
        for job_id in dict.fromkeys(paid_jobs):
            paid_job = await self.client.get_job(job_id)
            if paid_job is not None:
                update = await self._job_update(paid_job)
                if update is not None:
                    updates.append(update)
        return UpdatesBatch(updates=updates, cursor=cursor)

    async def _job_update(self, job: Job) -> ExternalUpdate | None:
        marker = mapping.marker_from_tags(job.tags)
        if marker is None:
            return None
        status: ExternalStatus | None = mapping.job_status(job.work_status)
        if status is None:
            log.warning("job %s has an unknown work status; skipped", job.id)
            return None
        revenue = None
        completed_at = None
        if status == "completed":
            revenue = mapping.revenue_from_invoices(await self.client.job_invoices(job.id))
            if job.work_timestamps is not None:
                completed_at = parse_timestamp(job.work_timestamps.completed_at)
        refs: dict[str, int | str] = {"job_id": job.id}
        if job.invoice_number:
            refs["invoice_number"] = job.invoice_number
        kind = self._kind
        modified = parse_timestamp(job.updated_at) or parse_timestamp(job.created_at) or self._now()
        return ExternalUpdate(
            kind=kind,
            # in lead mode the job was converted from our lead: the lead is matched by the marker
            external_id=job.id,
            external_status=status,
            modified_on=modified,
            marker=marker,
            completed_at=completed_at,
            revenue=revenue,
            refs=refs,
            source="job",
        )

    # ----------------------------------------------------------------------------------------------------------
    # results
    # ----------------------------------------------------------------------------------------------------------

    @staticmethod
    def _lead_result(lead: Lead, *, adopted: bool) -> DeliveryResult:
        refs: dict[str, int | str] = {"lead_id": lead.id}
        if lead.number is not None:
            refs["lead_number"] = lead.number
        if lead.customer is not None and lead.customer.id:
            refs["customer_id"] = lead.customer.id
        if lead.address is not None and lead.address.id:
            refs["address_id"] = lead.address.id
        return DeliveryResult(external_id=lead.id, kind="lead", refs=refs, adopted=adopted)

    @staticmethod
    def _job_result(job: Job, *, adopted: bool) -> DeliveryResult:
        refs: dict[str, int | str] = {"job_id": job.id}
        if job.invoice_number:
            refs["invoice_number"] = job.invoice_number
        if job.customer is not None and job.customer.id:
            refs["customer_id"] = job.customer.id
        if job.address is not None:
            refs["address_id"] = job.address.id
        return DeliveryResult(external_id=job.id, kind="job", refs=refs, adopted=adopted)


# --------------------------------------------------------------------------------------------------------------
# Dry run: the requests a delivery would send, rendered by the same mapping functions the client serialises
# --------------------------------------------------------------------------------------------------------------

CUSTOMER_ID_PLACEHOLDER = "{customer_id}"
ADDRESS_ID_PLACEHOLDER = "{address_id}"
_GET_HEADERS = {"Accept": "application/json", "Authorization": f"Token {REDACTED}"}
_HEADERS = {**_GET_HEADERS, "Content-Type": "application/json"}


def _body(model: Any) -> dict[str, Any]:
    body: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)  # as HousecallProClient sends it
    return body


def plan_delivery(
    config: HousecallProSettings, request: DeliveryRequest, *, lookup: bool, now: datetime
) -> DeliveryPlan:
    """What :class:`HousecallProProvider` would send for ``request`` (no credentials needed)."""
    base = config.api_base
    lead = config.delivery_mode == "lead"
    record = "lead" if lead else "job"
    planned: list[PlannedRequest] = []
    search = "look for the homeowner among existing customers (by phone, else e-mail, else name and address)"
    if lookup:
        planned.append(
            PlannedRequest(
                "find_existing",
                "GET",
                f"{base}/customers",
                f"first: an earlier attempt's outcome is unknown; {search}, then their {record}s are checked for "
                f"the marker tag {mapping.marker_tag(request.marker)}",
                params={"q": REDACTED, "page": "1", "page_size": str(MAX_CANDIDATES)},
                headers=dict(_GET_HEADERS),
            )
        )
        scan_params = (
            {"lead_source": config.lead_source, "sort_by": "created_at", "sort_direction": "desc"}
            if lead
            else {"sort_by": "created_at", "sort_direction": "desc"}
        )
        planned.append(
            PlannedRequest(
                "find_existing",
                "GET",
                f"{base}/{record}s",
                f"if the homeowner's customers hold none: a bounded scan of recent {record}s for the marker tag",
                params={**scan_params, "page": "1", "page_size": str(SCAN_PAGE_SIZE)},
                headers=dict(_GET_HEADERS),
            )
        )
    then = "if the lookup found nothing: " if lookup else ""
    planned.append(
        PlannedRequest(
            "find_customer",
            "GET",
            f"{base}/customers",
            f"{then}{search}",
            params={"q": REDACTED, "page": "1", "page_size": str(MAX_CANDIDATES)},
            headers=dict(_GET_HEADERS),
        )
    )
    planned.append(
        PlannedRequest(
            "create_customer",
            "POST",
            f"{base}/customers",
            f"{then}only if no existing customer matches (created with the service address)",
            headers=dict(_HEADERS),
            body=_body(mapping.customer_body(request, config)),
        )
    )
    planned.append(
        PlannedRequest(
            "create_address",
            "POST",
            f"{base}/customers/{CUSTOMER_ID_PLACEHOLDER}/addresses",
            f"{then}only if the matched customer has no address at the service address",
            headers=dict(_HEADERS),
            body=_body(mapping.address_body(request)),
        )
    )
    if lead:
        body = _body(
            mapping.lead_body(request, config, customer_id=CUSTOMER_ID_PLACEHOLDER, address_id=ADDRESS_ID_PLACEHOLDER)
        )
    else:
        body = _body(
            mapping.job_body(request, config, customer_id=CUSTOMER_ID_PLACEHOLDER, address_id=ADDRESS_ID_PLACEHOLDER)
        )
    planned.append(
        PlannedRequest(
            f"create_{record}",
            "POST",
            f"{base}/{record}s",
            f"{then}always" if lookup else "always",
            headers=dict(_HEADERS),
            body=body,
        )
    )
    return DeliveryPlan(
        planned,
        placeholders={
            CUSTOMER_ID_PLACEHOLDER: "the matched or created customer's id",
            ADDRESS_ID_PLACEHOLDER: "the id of that customer's address at the service address",
        },
    )
