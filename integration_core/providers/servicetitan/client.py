"""Typed async client for the parts of ServiceTitan's v2 tenant API this service uses.

The ``httpx.AsyncClient`` (or just its transport) is **injected**: tests wrap the transport with the
OpenAPI-validating transport and point it at the sandbox; production passes nothing and gets a client with
explicit connect/read/write/pool timeouts. The client never retries on its own (except the auth flow's one
refresh-and-retry on 401): the delivery engine owns retries, backoff and the rate budget, and every failure
reaches it as one of the classified errors of ``providers/base.py`` (see ``errors.py``).

List methods are async iterators that walk ServiceTitan's ``page``/``pageSize``/``hasMore`` paging and split
``ids`` filters into chunks of 50 (ServiceTitan's maximum). Only filters ServiceTitan documents are sent:
it silently ignores unknown query parameters and answers with an unfiltered page instead.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from integration_core.providers import http
from integration_core.providers.base import Permanent, ProviderError, RequestGate
from integration_core.providers.servicetitan.auth import (
    DEFAULT_REFRESH_MARGIN,
    AccessToken,
    Clock,
    ServiceTitanAuth,
    TokenCache,
    token_url_for,
)
from integration_core.providers.servicetitan.config import ConnectionConfig
from integration_core.providers.servicetitan.errors import classify_response, classify_transport_error
from integration_core.providers.servicetitan.models import (
    BookingResponse,
    ContactResponse,
    CreateBookingRequest,
    CreateCustomerRequest,
    CreateJobRequest,
    CreateLocationRequest,
    CustomerResponse,
    InvoiceResponse,
    JobResponse,
    LocationResponse,
    NamedResource,
    Page,
)

__all__ = [
    "API_HOSTS",
    "DEFAULT_LIMITS",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_IDS",
    "ServiceTitanClient",
    "api_base_for",
    "format_datetime",
]

API_HOSTS: dict[str, str] = {
    "production": "https://api.servicetitan.io",
    "integration": "https://api-integration.servicetitan.io",
}
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=10.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=30.0)
DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 5000
MAX_IDS = 50
MAX_PAGES = 10_000

M = TypeVar("M", bound=BaseModel)


def api_base_for(config: ConnectionConfig) -> str:
    """API host: ServiceTitan's per environment, the configured ``base_url`` for the sandbox."""
    if config.environment == "sandbox":
        if not config.base_url:
            raise ValueError("the sandbox environment needs a base_url")
        return config.base_url.rstrip("/")
    return API_HOSTS[config.environment]


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC, as ServiceTitan's date-time filters expect (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _chunks(ids: Sequence[int], size: int = MAX_IDS) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _query(params: Mapping[str, Any]) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            query[name] = "true" if value else "false"
        elif isinstance(value, datetime):
            query[name] = format_datetime(value)
        elif isinstance(value, list | tuple):
            query[name] = ",".join(str(v) for v in value)
        else:
            query[name] = str(value)
    return query


class ServiceTitanClient(http.OwnedHttpClient):
    """One tenant's ServiceTitan API.

    Args:
        config: the connection (environment, tenant, credentials).
        http_client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`); the test seam.
        transport: alternatively, a transport for a client built here (e.g. a validating wrapper).
        timeout: per-request timeouts; always sent explicitly, whatever the injected client's defaults.
        token_cache: where tokens are cached; the process-wide cache by default.
        clock: monotonic seconds, for token expiry (tests inject a fake).
        token_refresh_margin: refresh a token this many seconds before it expires.
        gate: awaited before every API request (the engine's shared rate budget); token requests bypass it.
    """

    def __init__(
        self,
        config: ConnectionConfig,
        *,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        token_cache: TokenCache | None = None,
        clock: Clock = time.monotonic,
        token_refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        gate: RequestGate | None = None,
    ) -> None:
        self._init_http(http_client, transport, timeout=timeout, limits=DEFAULT_LIMITS)
        self.config = config
        self.tenant = config.tenant_id
        self.api_base = api_base_for(config)
        self.token_url = token_url_for(config.environment, config.base_url)
        self._timeout = timeout
        self._gate = gate
        self._auth = ServiceTitanAuth(
            token_url=self.token_url,
            client_id=config.client_id.get_secret_value(),
            client_secret=config.client_secret,
            app_key=config.app_key,
            http=self._http,
            cache=token_cache,
            clock=clock,
            refresh_margin=token_refresh_margin,
        )
        self._secrets = (config.client_secret.get_secret_value(), config.app_key.get_secret_value())

    def __repr__(self) -> str:
        return f"ServiceTitanClient(api_base={self.api_base!r}, tenant={self.tenant!r})"

    # ----------------------------------------------------------------------------------------------------------
    # Core
    # ----------------------------------------------------------------------------------------------------------

    async def token(self) -> AccessToken:
        """A valid access token (cached or freshly fetched); raises ``AuthFailed`` for rejected credentials."""
        return await self._auth.token()

    def _path(self, module: str, resource: str) -> str:
        return f"{self.api_base}/{module}/v2/tenant/{self.tenant}/{resource}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        body: BaseModel | None = None,
        sensitive: Iterable[str] = (),
    ) -> Any:
        """Send one authenticated request and return its JSON, or raise a classified ``ProviderError``."""
        write = http.is_write(method)
        json_body = body.model_dump(mode="json", by_alias=True, exclude_none=True) if body is not None else None
        request = self._http.build_request(
            method,
            url,
            params=_query(params or {}),
            json=json_body,
            headers={"Accept": "application/json"},
            timeout=self._timeout,
        )
        if self._gate is not None:
            await self._gate.acquire(write=write)
        try:
            response = await self._http.send(request, auth=self._auth)
        except ProviderError:
            raise  # a token failure, already classified by the auth flow
        except httpx.TransportError as exc:
            raise classify_transport_error(exc, operation=operation, write=write) from exc
        if not response.is_success:
            raise classify_response(response, operation=operation, write=write, sensitive=[*sensitive, *self._secrets])
        return http.read_json(response, operation=operation, write=write, provider="ServiceTitan")

    _parse = staticmethod(http.parse_model)

    async def get_page(
        self,
        url: str,
        model: type[M],
        params: Mapping[str, Any],
        *,
        operation: str,
        sensitive: Iterable[str] = (),
    ) -> Page[M]:
        data = await self.request("GET", url, operation=operation, params=params, sensitive=sensitive)
        return self._parse(Page[model], data, operation=operation, write=False)  # type: ignore[valid-type]

    async def paginate(
        self,
        url: str,
        model: type[M],
        params: Mapping[str, Any] | None = None,
        *,
        operation: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        sensitive: Iterable[str] = (),
    ) -> AsyncGenerator[M, None]:
        """Every item of a paged list: ``page`` = 1, 2, … until ``hasMore`` is false (or a page comes back empty)."""
        page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        sensitive = list(sensitive)
        for page in range(1, MAX_PAGES + 1):
            result = await self.get_page(
                url,
                model,
                {**(params or {}), "page": page, "pageSize": page_size},
                operation=operation,
                sensitive=sensitive,
            )
            for item in result.data:
                yield item
            if not result.has_more or not result.data:
                return
        raise Permanent(f"{operation}: more than {MAX_PAGES} pages", code="too_many_pages")

    async def _paginate_ids(
        self,
        url: str,
        model: type[M],
        params: Mapping[str, Any],
        ids: Sequence[int] | None,
        *,
        operation: str,
        page_size: int,
        sensitive: Iterable[str] = (),
    ) -> AsyncGenerator[M, None]:
        if ids is None:
            async for item in self.paginate(
                url, model, params, operation=operation, page_size=page_size, sensitive=sensitive
            ):
                yield item
            return
        for chunk in _chunks(list(dict.fromkeys(ids))):
            async for item in self.paginate(
                url,
                model,
                {**params, "ids": list(chunk)},
                operation=operation,
                page_size=page_size,
                sensitive=sensitive,
            ):
                yield item

    async def _get_one(
        self, url: str, model: type[M], *, operation: str, params: Mapping[str, Any] | None = None
    ) -> M | None:
        try:
            data = await self.request("GET", url, operation=operation, params=params)
        except Permanent as exc:
            if exc.http_status == 404:
                return None
            raise
        return self._parse(model, data, operation=operation, write=False)

    async def _create(
        self, url: str, model: type[M], body: BaseModel, *, operation: str, sensitive: Iterable[str]
    ) -> M:
        data = await self.request("POST", url, operation=operation, body=body, sensitive=sensitive)
        return self._parse(model, data, operation=operation, write=True)

    # ----------------------------------------------------------------------------------------------------------
    # Bookings
    # ----------------------------------------------------------------------------------------------------------

    def bookings_url(self, booking_provider_id: int) -> str:
        return self._path("crm", f"booking-provider/{booking_provider_id}/bookings")

    async def create_booking(
        self, booking_provider_id: int, body: CreateBookingRequest, *, sensitive: Iterable[str] = ()
    ) -> BookingResponse:
        return await self._create(
            self.bookings_url(booking_provider_id),
            BookingResponse,
            body,
            operation="create_booking",
            sensitive=sensitive,
        )

    async def get_booking(self, booking_provider_id: int, booking_id: int) -> BookingResponse | None:
        url = f"{self.bookings_url(booking_provider_id)}/{booking_id}"
        return await self._get_one(url, BookingResponse, operation="get_booking")

    def list_bookings(
        self,
        booking_provider_id: int,
        *,
        external_id: str | None = None,
        ids: Sequence[int] | None = None,
        modified_on_or_after: datetime | None = None,
        sort: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncGenerator[BookingResponse, None]:
        params = {"externalId": external_id, "modifiedOnOrAfter": modified_on_or_after, "sort": sort}
        return self._paginate_ids(
            self.bookings_url(booking_provider_id),
            BookingResponse,
            params,
            ids,
            operation="list_bookings",
            page_size=page_size,
        )

    # ----------------------------------------------------------------------------------------------------------
    # Customers and locations
    # ----------------------------------------------------------------------------------------------------------

    async def create_customer(self, body: CreateCustomerRequest, *, sensitive: Iterable[str] = ()) -> CustomerResponse:
        return await self._create(
            self._path("crm", "customers"),
            CustomerResponse,
            body,
            operation="create_customer",
            sensitive=sensitive,
        )

    def list_customers(
        self,
        *,
        phone: str | None = None,
        name: str | None = None,
        street: str | None = None,
        unit: str | None = None,
        city: str | None = None,
        state: str | None = None,
        zip: str | None = None,
        ids: Sequence[int] | None = None,
        modified_on_or_after: datetime | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncGenerator[CustomerResponse, None]:
        """Active customers matching every given filter (``phone`` matches any of a customer's phone contacts)."""
        params = {
            "phone": phone,
            "name": name,
            "street": street,
            "unit": unit,
            "city": city,
            "state": state,
            "zip": zip,
            "modifiedOnOrAfter": modified_on_or_after,
        }
        sensitive = [v for v in (phone, name, street, unit) if v]
        return self._paginate_ids(
            self._path("crm", "customers"),
            CustomerResponse,
            params,
            ids,
            operation="list_customers",
            page_size=page_size,
            sensitive=sensitive,
        )

    def list_customer_contacts(self, customer_id: int) -> AsyncGenerator[ContactResponse, None]:
        return self.paginate(
            self._path("crm", f"customers/{customer_id}/contacts"),
            ContactResponse,
            operation="list_customer_contacts",
            page_size=DEFAULT_PAGE_SIZE,
        )

    async def create_location(self, body: CreateLocationRequest, *, sensitive: Iterable[str] = ()) -> LocationResponse:
        return await self._create(
            self._path("crm", "locations"),
            LocationResponse,
            body,
            operation="create_location",
            sensitive=sensitive,
        )

    def list_locations(
        self,
        *,
        customer_id: int | None = None,
        street: str | None = None,
        zip: str | None = None,
        ids: Sequence[int] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncGenerator[LocationResponse, None]:
        params = {"customerId": customer_id, "street": street, "zip": zip}
        return self._paginate_ids(
            self._path("crm", "locations"),
            LocationResponse,
            params,
            ids,
            operation="list_locations",
            page_size=page_size,
            sensitive=[street] if street else [],
        )

    # ----------------------------------------------------------------------------------------------------------
    # Jobs
    # ----------------------------------------------------------------------------------------------------------

    async def create_job(self, body: CreateJobRequest, *, sensitive: Iterable[str] = ()) -> JobResponse:
        return await self._create(
            self._path("jpm", "jobs"), JobResponse, body, operation="create_job", sensitive=sensitive
        )

    async def get_job(self, job_id: int, *, external_data_guid: str | None = None) -> JobResponse | None:
        params = {"externalDataApplicationGuid": external_data_guid}
        return await self._get_one(self._path("jpm", f"jobs/{job_id}"), JobResponse, operation="get_job", params=params)

    def list_jobs(
        self,
        *,
        ids: Sequence[int] | None = None,
        modified_on_or_after: datetime | None = None,
        customer_id: int | None = None,
        booking_id: int | None = None,
        external_data_guid: str | None = None,
        external_data_key: str | None = None,
        external_data_values: Sequence[str] | None = None,
        sort: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncGenerator[JobResponse, None]:
        """Jobs matching every given filter.

        ``external_data_key``/``external_data_values`` (≤ 50 values) must be given together, and need the GUID;
        jobs then carry the ``externalData`` of that GUID.
        """
        if (external_data_key is None) != (external_data_values is None):
            raise ValueError("external_data_key and external_data_values go together")
        if external_data_values is not None and (external_data_guid is None or len(external_data_values) > MAX_IDS):
            raise ValueError("external_data_values needs the application GUID and at most 50 values")
        params = {
            "modifiedOnOrAfter": modified_on_or_after,
            "customerId": customer_id,
            "bookingId": booking_id,
            "externalDataApplicationGuid": external_data_guid,
            "externalDataKey": external_data_key,
            "externalDataValues": list(external_data_values) if external_data_values is not None else None,
            "sort": sort,
        }
        return self._paginate_ids(
            self._path("jpm", "jobs"), JobResponse, params, ids, operation="list_jobs", page_size=page_size
        )

    # ----------------------------------------------------------------------------------------------------------
    # Settings, marketing, accounting
    # ----------------------------------------------------------------------------------------------------------

    def list_business_units(
        self, *, ids: Sequence[int] | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncGenerator[NamedResource, None]:
        return self._paginate_ids(
            self._path("settings", "business-units"),
            NamedResource,
            {},
            ids,
            operation="list_business_units",
            page_size=page_size,
        )

    def list_job_types(
        self, *, ids: Sequence[int] | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncGenerator[NamedResource, None]:
        return self._paginate_ids(
            self._path("jpm", "job-types"),
            NamedResource,
            {},
            ids,
            operation="list_job_types",
            page_size=page_size,
        )

    def list_campaigns(
        self, *, ids: Sequence[int] | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncGenerator[NamedResource, None]:
        return self._paginate_ids(
            self._path("marketing", "campaigns"),
            NamedResource,
            {},
            ids,
            operation="list_campaigns",
            page_size=page_size,
        )

    async def first_business_unit_page(self) -> Page[NamedResource]:
        """The cheapest authenticated read: one business unit (connection checks)."""
        return await self.get_page(
            self._path("settings", "business-units"),
            NamedResource,
            {"page": 1, "pageSize": 1},
            operation="list_business_units",
        )

    def list_invoices(
        self,
        *,
        job_id: int | None = None,
        modified_on_or_after: datetime | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncGenerator[InvoiceResponse, None]:
        """A job's invoices, or every invoice modified since a time (invoice edits after a job completed)."""
        params = {"jobId": job_id, "modifiedOnOrAfter": modified_on_or_after}
        return self.paginate(
            self._path("accounting", "invoices"),
            InvoiceResponse,
            params,
            operation="list_invoices",
            page_size=page_size,
        )
