"""Typed async client for the parts of Housecall Pro's v1 API this service uses.

As the ServiceTitan client: the ``httpx.AsyncClient`` (or its transport) is injected — tests wrap the transport
with the sandbox's OpenAPI-validating transport — and production gets explicit connect/read/write/pool timeouts.
The client never retries: the delivery engine owns retries, backoff and the rate budget (``gate``, awaited before
every request with ``write`` telling reads from writes), and every failure reaches it classified (``errors.py``).

Authentication is ``Authorization: Token <api key>`` on every request (no token endpoint, nothing to refresh).

Lists walk Housecall Pro's ``page`` (from 1) / ``page_size`` / ``total_pages`` paging. Only query parameters the
definition documents are sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from integration_core.providers import http
from integration_core.providers.base import Permanent, RequestGate
from integration_core.providers.housecallpro.config import HousecallProSettings
from integration_core.providers.housecallpro.errors import classify_response, classify_transport_error
from integration_core.providers.housecallpro.models import (
    Address,
    Customer,
    CustomerCreate,
    CustomersPage,
    Invoice,
    InvoicesPage,
    Job,
    JobCreate,
    JobInvoices,
    JobsPage,
    Lead,
    LeadCreate,
    LeadsPage,
    NewAddress,
    Paginated,
)

__all__ = ["DEFAULT_LIMITS", "DEFAULT_PAGE_SIZE", "DEFAULT_TIMEOUT", "MAX_PAGES", "HousecallProClient"]

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=10.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=30.0)
DEFAULT_PAGE_SIZE = 100
MAX_PAGES = 10_000

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=Paginated)


def _query(params: Mapping[str, Any]) -> list[tuple[str, str | int | float | bool | None]]:
    """Query pairs; a list repeats its key (OpenAPI's default ``form``/``explode`` style for query arrays)."""
    query: list[tuple[str, str | int | float | bool | None]] = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            query.append((name, "true" if value else "false"))
        elif isinstance(value, list | tuple):
            query.extend((name, str(v)) for v in value)
        else:
            query.append((name, str(value)))
    return query


class HousecallProClient(http.OwnedHttpClient):
    """One Housecall Pro account's API.

    Args:
        config: the connection (API root, key).
        http_client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`); the test seam.
        transport: alternatively, a transport for a client built here (e.g. a validating wrapper).
        timeout: per-request timeouts, always sent explicitly.
        gate: awaited before every request (the engine's shared rate budget).
        clock: monotonic seconds (when a request left, when a 429 came back), injectable for tests.
    """

    def __init__(
        self,
        config: HousecallProSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        gate: RequestGate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._init_http(http_client, transport, timeout=timeout, limits=DEFAULT_LIMITS)
        self.config = config
        self.api_base = config.api_base
        self._timeout = timeout
        self._gate = gate
        self._key = config.api_key.get_secret_value()
        self._unexplained_429s = 0
        self._last_429_at = float("-inf")
        self._clock = clock

    def __repr__(self) -> str:
        return f"HousecallProClient(api_base={self.api_base!r}, account={self.config.account_id!r})"

    # ----------------------------------------------------------------------------------------------------------
    # Core
    # ----------------------------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.api_base}/{path.lstrip('/')}"

    def build_request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: BaseModel | None = None
    ) -> httpx.Request:
        """The exact request :meth:`request` sends (also used to render dry runs)."""
        json_body = body.model_dump(mode="json", exclude_none=True) if body is not None else None
        return self._http.build_request(
            method,
            self.url(path),
            params=_query(params or {}),
            json=json_body,
            headers={"Accept": "application/json", "Authorization": f"Token {self._key}"},
            timeout=self._timeout,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        body: BaseModel | None = None,
        sensitive: Iterable[str] = (),
    ) -> Any:
        """Send one authenticated request and return its JSON, or raise a classified ``ProviderError``."""
        write = http.is_write(method)
        request = self.build_request(method, path, params=params, body=body)
        if self._gate is not None:
            await self._gate.acquire(write=write)
        sent = self._clock()
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise classify_transport_error(exc, operation=operation, write=write) from exc
        self._note_throttling(response, sent)
        if not response.is_success:
            error = classify_response(
                response,
                operation=operation,
                write=write,
                sensitive=[*sensitive, self._key],
                unexplained_429s=max(1, self._unexplained_429s),
            )
            raise error
        return http.read_json(response, operation=operation, write=write, provider="Housecall Pro")

    def _note_throttling(self, response: httpx.Response, sent: float) -> None:
        """Count consecutive 429s that name no wait (their backoff doubles with each).

        Only answers to requests sent *after* the previous such 429 arrived count: requests already in flight
        when it came are throttled by the same episode, and must not escalate the wait. An answer that is not a
        429 to a request sent after the last one ends the streak.
        """
        if response.status_code == 429 and "retry-after" not in response.headers:
            if sent >= self._last_429_at or self._unexplained_429s == 0:
                self._unexplained_429s += 1
            self._last_429_at = self._clock()
        elif response.status_code != 429 and sent >= self._last_429_at:
            self._unexplained_429s = 0

    _parse = staticmethod(http.parse_model)

    async def _get(self, path: str, model: type[M], *, operation: str, params: Mapping[str, Any] | None = None) -> M:
        data = await self.request("GET", path, operation=operation, params=params)
        return self._parse(model, data, operation=operation, write=False)

    async def _get_one(self, path: str, model: type[M], *, operation: str) -> M | None:
        try:
            return await self._get(path, model, operation=operation)
        except Permanent as exc:
            if exc.http_status == 404:
                return None
            raise

    async def _create(
        self, path: str, model: type[M], body: BaseModel, *, operation: str, sensitive: Iterable[str]
    ) -> M:
        data = await self.request("POST", path, operation=operation, body=body, sensitive=sensitive)
        return self._parse(model, data, operation=operation, write=True)

    async def pages(
        self,
        path: str,
        model: type[P],
        params: Mapping[str, Any] | None = None,
        *,
        operation: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        sensitive: Iterable[str] = (),
    ) -> AsyncGenerator[P, None]:
        """Every page of a list: ``page`` = 1, 2, … up to ``total_pages`` (or until a page comes back empty)."""
        sensitive = list(sensitive)
        for page in range(1, MAX_PAGES + 1):
            data = await self.request(
                "GET",
                path,
                operation=operation,
                params={**(params or {}), "page": page, "page_size": page_size},
                sensitive=sensitive,
            )
            result = self._parse(model, data, operation=operation, write=False)
            yield result
            total = result.total_pages
            items = [v for k, v in result.model_dump().items() if isinstance(v, list)]
            if not any(items) or total is None or page >= int(total):
                return
        raise Permanent(f"{operation}: more than {MAX_PAGES} pages", code="too_many_pages")

    # ----------------------------------------------------------------------------------------------------------
    # Customers and addresses
    # ----------------------------------------------------------------------------------------------------------

    async def search_customers(self, q: str, *, page_size: int = 25, sensitive: Iterable[str] = ()) -> list[Customer]:
        """The first page of customers matching ``q`` (Housecall Pro searches name, e-mail, mobile number, address)."""
        data = await self.request(
            "GET",
            "/customers",
            operation="search_customers",
            params={"q": q, "page": 1, "page_size": page_size},
            sensitive=[*sensitive, q],
        )
        return self._parse(CustomersPage, data, operation="search_customers", write=False).customers

    async def get_customer(self, customer_id: str) -> Customer | None:
        return await self._get_one(f"/customers/{customer_id}", Customer, operation="get_customer")

    async def create_customer(self, body: CustomerCreate, *, sensitive: Iterable[str] = ()) -> Customer:
        return await self._create("/customers", Customer, body, operation="create_customer", sensitive=sensitive)

    async def create_address(self, customer_id: str, body: NewAddress, *, sensitive: Iterable[str] = ()) -> Address:
        return await self._create(
            f"/customers/{customer_id}/addresses", Address, body, operation="create_address", sensitive=sensitive
        )

    # ----------------------------------------------------------------------------------------------------------
    # Leads
    # ----------------------------------------------------------------------------------------------------------

    async def create_lead(self, body: LeadCreate, *, sensitive: Iterable[str] = ()) -> Lead:
        return await self._create("/leads", Lead, body, operation="create_lead", sensitive=sensitive)

    async def get_lead(self, lead_id: str) -> Lead | None:
        return await self._get_one(f"/leads/{lead_id}", Lead, operation="get_lead")

    async def list_leads(
        self,
        *,
        customer_id: str | None = None,
        lead_source: str | None = None,
        status: str | None = None,
        sort_by: str | None = None,
        sort_direction: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncGenerator[Lead, None]:
        params = {
            "customer_id": customer_id,
            "lead_source": lead_source,
            "status": status,
            "sort_by": sort_by,
            "sort_direction": sort_direction,
        }
        async for page in self.pages("/leads", LeadsPage, params, operation="list_leads", page_size=page_size):
            for lead in page.leads:
                yield lead

    # ----------------------------------------------------------------------------------------------------------
    # Jobs and invoices
    # ----------------------------------------------------------------------------------------------------------

    async def create_job(self, body: JobCreate, *, sensitive: Iterable[str] = ()) -> Job:
        return await self._create("/jobs", Job, body, operation="create_job", sensitive=sensitive)

    async def get_job(self, job_id: str) -> Job | None:
        return await self._get_one(f"/jobs/{job_id}", Job, operation="get_job")

    async def list_jobs(
        self,
        *,
        customer_id: str | None = None,
        sort_by: str | None = None,
        sort_direction: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncGenerator[Job, None]:
        params = {"customer_id": customer_id, "sort_by": sort_by, "sort_direction": sort_direction}
        async for page in self.pages("/jobs", JobsPage, params, operation="list_jobs", page_size=page_size):
            for job in page.jobs:
                yield job

    async def job_invoices(self, job_id: str) -> list[Invoice]:
        data = await self._get(f"/jobs/{job_id}/invoices", JobInvoices, operation="list_job_invoices")
        return data.invoices

    async def list_invoices(
        self,
        *,
        paid_at_min: str | None = None,
        sort_by: str | None = None,
        sort_direction: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncGenerator[Invoice, None]:
        params = {"paid_at_min": paid_at_min, "sort_by": sort_by, "sort_direction": sort_direction}
        async for page in self.pages("/invoices", InvoicesPage, params, operation="list_invoices", page_size=page_size):
            for invoice in page.invoices:
                yield invoice
