"""Housecall Pro's public API as the sandbox serves it: auth, throttling, faults, then the resource handlers.

Every call passes, in order: authentication (`Authorization: Token <api-key>`, else 401) → 429 storm → the
company's token bucket (429, with `Retry-After` per the account's mode) → fault decision (latency, 5xx, hold,
commit-then-fail / drop) → body checks against the definition and Housecall Pro's rules (400/404/422) → the
handler. Handlers are synchronous: a record is checked and written without yielding to the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from sandboxes.common.app import ConnectionDropped
from sandboxes.common.faults import after_commit, before_handling

from .errors import ApiError, error_body, field_error, json_response
from .spec import Definitions
from .state import (
    INVOICE_STATUSES,
    LEAD_STATUSES,
    WORK_STATUS_FILTER,
    Account,
    Customer,
    Job,
    Sandbox,
    TransitionError,
    fmt_dt,
    parse_dt,
)

Handler = Callable[["Ctx"], tuple[int, Any]]

__all__ = ["ENDPOINTS", "Api", "ConnectionDropped", "Endpoint"]


class Query:
    """Query parameters: repeated (`a=1&a=2`), bracketed (`a[]=1`) and comma-separated values all count."""

    def __init__(self, params: QueryParams) -> None:
        self.params = params

    def text(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value is not None and value.strip() else None

    def many(self, name: str) -> list[str]:
        raw = self.params.getlist(name) + self.params.getlist(f"{name}[]")
        return [v.strip() for item in raw for v in item.split(",") if v.strip()]

    def integer(self, name: str, default: int, *, lo: int = 1) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(float(raw))
        except ValueError:
            raise ApiError(400, f"{name} must be a number", {name: ["must be a number"]}) from None
        if value < lo:
            raise ApiError(400, f"{name} must be >= {lo}", {name: [f"must be >= {lo}"]})
        return value

    def number(self, name: str) -> float | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            raise ApiError(400, f"{name} must be a number", {name: ["must be a number"]}) from None

    def dt(self, name: str) -> datetime | None:
        raw = self.text(name)
        if raw is None:
            return None
        value = parse_dt(raw)
        if value is None:
            raise ApiError(400, f"{name} must be an ISO-8601 date", {name: ["must be an ISO-8601 date"]})
        return value


@dataclass
class Ctx:
    request: Request
    sandbox: Sandbox
    account: Account
    query: Query
    body: Any = None

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def page(self, items: list[Any], key: str, to_json: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        cfg = self.sandbox.config
        page = self.query.integer("page", 1)
        size = min(self.query.integer("page_size", cfg.default_page_size), cfg.max_page_size)
        total = len(items)
        chunk = items[(page - 1) * size : page * size]
        return {
            "page": page,
            "page_size": size,
            "total_pages": math.ceil(total / size) if total else 0,
            "total_items": total,
            key: [to_json(i) for i in chunk],
        }

    def sort(
        self, items: Iterable[Any], keys: dict[str, Callable[[Any], Any]], default: str = "created_at"
    ) -> list[Any]:
        sort_by = self.query.text("sort_by") or default
        if sort_by not in keys:
            raise ApiError(400, f"sort_by must be one of {', '.join(keys)}", {"sort_by": ["is not valid"]})
        direction = (self.query.text("sort_direction") or "desc").lower()
        if direction not in ("asc", "desc"):
            raise ApiError(400, "sort_direction must be asc or desc", {"sort_direction": ["is not valid"]})
        key = keys[sort_by]
        # ties broken by id, always ascending: pages stay stable between calls
        ordered = sorted(items, key=lambda r: r.id)
        return sorted(ordered, key=key, reverse=direction == "desc")


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # as in the definition
    handler: Handler
    validate_body: bool = False

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.template}"


@dataclass
class Api:
    sandbox: Sandbox
    definitions: Definitions

    async def definitions_ready(self) -> Definitions:
        if not self.definitions.loaded:
            await asyncio.to_thread(self.definitions.load)
        return self.definitions

    def _authenticate(self, request: Request) -> Account:
        authz = request.headers.get("authorization", "")
        scheme, _, key = authz.partition(" ")
        if scheme != "Token" or not key.strip():
            raise ApiError(401, "Missing or malformed Authorization header: expected `Token <api-key>`.")
        account = self.sandbox.account_by_key(key.strip())
        if account is None:
            raise ApiError(401, "Invalid API key.")
        return account

    def _record(self, account: Account | None, route: str, status: int | str) -> None:
        if account is not None:
            account.stats.record(route, status)
        else:
            self.sandbox.unattributed[f"{route} {status}"] += 1

    async def dispatch(self, endpoint: Endpoint, request: Request) -> Response:
        route = endpoint.route_key
        try:
            account = self._authenticate(request)
        except ApiError as exc:
            self._record(None, route, exc.status)
            return exc.response()

        storm = account.faults.storm_answer(endpoint.method)
        if storm is not None:
            admitted, retry_after, header = False, storm, account.storm_header
        else:
            admitted, retry_after = account.take()
            header = account.throttle_header() if not admitted else True
        if not admitted:
            account.stats.rate_limited += 1
            if not header:
                account.stats.rate_limited_without_retry_after += 1
            self._record(account, route, 429)
            return throttled(retry_after if header else None)
        account.stats.accepted.append(time.monotonic())

        decision = account.faults.decide(endpoint.method, route)
        record = functools.partial(self._record, account, route)
        stopped = await before_handling(
            decision,
            lambda: account.faults.config.timeout_s,
            record,
            _error_answer,
            drops=lambda: account.faults.drops(endpoint.method, route, decision),  # cut before handling
        )
        if stopped is not None:
            return stopped
        response = await self._handle(endpoint, request, account)
        return await after_commit(decision, lambda: account.faults.config.timeout_s, record, _error_answer, response)

    async def _handle(self, endpoint: Endpoint, request: Request, account: Account) -> Response:
        try:
            ctx = Ctx(request, self.sandbox, account, Query(request.query_params))
            if endpoint.validate_body:
                ctx.body = await self._read_body(endpoint, request)
            status, payload = endpoint.handler(ctx)
            return json_response(status, payload)
        except ApiError as exc:
            return exc.response()

    async def _read_body(self, endpoint: Endpoint, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            body: Any = {}
        else:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise ApiError(400, f"The body is not valid JSON: {exc}") from None
        definitions = await self.definitions_ready()
        errors = definitions.body_errors(endpoint.method, endpoint.template, body)
        if errors:
            raise ApiError(400, "The request body does not match the API definition.", errors)
        return body


def _error_answer(status: int) -> Response:
    return json_response(status, error_body(status))


def throttled(retry_after: int | None) -> Response:
    headers = {"Retry-After": str(max(1, retry_after))} if retry_after is not None else None
    return json_response(429, error_body(429, "Too many requests. Slow down."), headers)


# -- helpers -------------------------------------------------------------------------------------


def _digits(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return digits[-10:] if len(digits) > 10 else digits


def _ts(attr: str) -> Callable[[Any], Any]:
    return lambda r: getattr(r, attr)


def _customer(ctx: Ctx, customer_id: str, *, status: int = 404, name: str = "customer_id") -> Customer:
    customer = ctx.account.customers.get(customer_id)
    if customer is None:
        raise ApiError(status, f"Customer {customer_id} not found", {name: ["not found"]} if status != 404 else None)
    return customer


CONTACT_FIELDS = ("first_name", "last_name", "email", "mobile_number", "home_number", "work_number")
ADDRESS_REQUIRED = ("street", "city", "state", "zip")


def _check_contact(body: dict[str, Any], prefix: str = "") -> None:
    if not any(str(body.get(f) or "").strip() for f in CONTACT_FIELDS):
        raise ApiError(
            422,
            "One of first_name, last_name, email, mobile_number, home_number, work_number is required.",
            {f"{prefix}first_name": ["one of the name, email or phone fields is required"]},
        )


def _expanded_customer(ctx: Ctx, customer: Customer) -> dict[str, Any]:
    """`expand=attachments` / `expand=do_not_service` add the fields the definition shows only when expanded."""
    out = customer.to_json(ctx.account)
    expand = set(ctx.query.many("expand"))
    if "attachments" in expand:
        out["attachments"] = []
    if "do_not_service" in expand:
        out["do_not_service"] = False
    return out


def _expanded_job(ctx: Ctx, job: Job) -> dict[str, Any]:
    """`expand=appointments` adds `schedule.appointments` (one per scheduled job), `expand=attachments` []."""
    out = job.to_json(ctx.account)
    expand = set(ctx.query.many("expand"))
    if "attachments" in expand:
        out["attachments"] = []
    if "appointments" in expand:
        appointments = []
        if job.scheduled_start is not None and job.scheduled_end is not None:
            appointments.append(
                {
                    "id": f"appt_{job.id.split('_', 1)[-1]}",
                    "start_date": job.scheduled_start.date().isoformat(),
                    "start_time": fmt_dt(job.scheduled_start),
                    "end_time": fmt_dt(job.scheduled_end),
                    "anytime": False,
                    "arrival_window_minutes": job.arrival_window,
                    "dispatched_employees_ids": [],
                }
            )
        out["schedule"]["appointments"] = appointments
    return out


# -- customers -----------------------------------------------------------------------------------


def create_customer(ctx: Ctx) -> tuple[int, Any]:
    _check_contact(ctx.body)
    customer = ctx.sandbox.create_customer(ctx.account, ctx.body)
    return 201, customer.to_json(ctx.account)


def list_customers(ctx: Ctx) -> tuple[int, Any]:
    items: list[Customer] = list(ctx.account.customers.values())
    q = ctx.query.text("q")
    if q is not None:
        text, digits = q.strip().lower(), _digits(q)
        items = [
            c
            for c in items
            if text in c.search_text() or (len(digits) >= 7 and any(_digits(p) == digits for p in c.phones()))
        ]
    keys = {
        "created_at": _ts("created_at"),
        "updated_at": _ts("updated_at"),
        "id": _ts("id"),
        "first_name": lambda c: c.first_name or "",
        "last_name": lambda c: c.last_name or "",
    }
    items = ctx.sort(items, keys)
    return 200, ctx.page(items, "customers", lambda c: _expanded_customer(ctx, c))


def get_customer(ctx: Ctx) -> tuple[int, Any]:
    return 200, _expanded_customer(ctx, _customer(ctx, ctx.param("customer_id")))


def list_addresses(ctx: Ctx) -> tuple[int, Any]:
    customer = _customer(ctx, ctx.param("customer_id"))
    items = ctx.sort(customer.addresses, {"created_at": _ts("created_at"), "updated_at": _ts("updated_at")})
    return 200, ctx.page(items, "addresses", lambda a: a.to_json())


def create_address(ctx: Ctx) -> tuple[int, Any]:
    customer = _customer(ctx, ctx.param("customer_id"))
    blank = [f for f in ADDRESS_REQUIRED if not str(ctx.body.get(f) or "").strip()]
    if blank:
        raise ApiError(422, "The address is incomplete.", {f: ["can't be blank"] for f in blank})
    address = ctx.sandbox.add_address(ctx.account, customer, ctx.body)
    return 200, address.to_json()


def get_address(ctx: Ctx) -> tuple[int, Any]:
    customer = _customer(ctx, ctx.param("customer_id"))
    address = customer.address(ctx.param("address_id"))
    if address is None:
        raise ApiError(404, "Address not found")
    return 200, address.to_json()


# -- leads ---------------------------------------------------------------------------------------


def create_lead(ctx: Ctx) -> tuple[int, Any]:
    body, account = ctx.body, ctx.account
    has_id, inline = body.get("customer_id") is not None, body.get("customer") is not None
    if has_id == inline:
        raise field_error("customer_id", "Exactly one of customer_id or customer is required.")
    if inline:
        _check_contact(body["customer"], "customer.")
    customer = account.customers.get(str(body["customer_id"])) if has_id else None
    if has_id and customer is None:
        raise field_error("customer_id", f"Customer {body['customer_id']} not found.", 404)
    address = None
    if body.get("address_id") is not None:
        if customer is None:
            raise field_error("address_id", "address_id needs customer_id.")
        address = customer.address(str(body["address_id"]))
        if address is None:
            raise field_error("address_id", f"Address {body['address_id']} does not belong to the customer.")
    if customer is None:
        customer = ctx.sandbox.create_customer(account, body["customer"])
    if address is None and body.get("address"):
        address = ctx.sandbox.add_address(account, customer, body["address"])
    if address is None and customer.addresses:
        address = customer.addresses[-1]
    lead = ctx.sandbox.create_lead(account, customer, address, body)
    return 201, lead.to_json(account)


def list_leads(ctx: Ctx) -> tuple[int, Any]:
    q, account = ctx.query, ctx.account
    items = list(account.leads.values())
    customer_id = q.text("customer_id")
    if customer_id is not None:
        items = [ld for ld in items if ld.customer_id == customer_id]
    status = q.text("status")
    if status is not None:
        if status not in LEAD_STATUSES:
            raise ApiError(400, "status must be lost, open or won", {"status": ["is not valid"]})
        items = [ld for ld in items if ld.status == status]
    tag_ids = q.many("tag_ids")
    if tag_ids:
        names = {account.tags[t].name for t in tag_ids if t in account.tags}
        items = [ld for ld in items if names.intersection(ld.tags)]
    sources = {s.lower() for s in q.many("lead_source")}
    if sources:
        items = [ld for ld in items if (ld.lead_source or "").lower() in sources]
    keys = {"created_at": _ts("created_at"), "updated_at": _ts("updated_at"), "id": _ts("id"), "status": _ts("status")}
    items = ctx.sort(items, keys)
    return 200, ctx.page(items, "leads", lambda ld: ld.to_json(account))


def get_lead(ctx: Ctx) -> tuple[int, Any]:
    lead = ctx.account.leads.get(ctx.param("id"))
    if lead is None:
        raise ApiError(404, "Lead not found")
    return 200, lead.to_json(ctx.account)


def convert_lead(ctx: Ctx) -> tuple[int, Any]:
    lead = ctx.account.leads.get(ctx.param("id"))
    if lead is None:
        raise ApiError(404, "Lead not found")
    to = str(ctx.body.get("type") or "job")
    try:
        new_id = ctx.sandbox.convert_lead(ctx.account, lead, to)
    except TransitionError as exc:
        raise ApiError(422, str(exc)) from None
    return 201, {"estimate_id": new_id} if to == "estimate" else {"job_id": new_id}


# -- jobs ----------------------------------------------------------------------------------------


def create_job(ctx: Ctx) -> tuple[int, Any]:
    body, account = ctx.body, ctx.account
    customer = _customer(ctx, str(body["customer_id"]), status=422)
    address = customer.address(str(body["address_id"]))
    if address is None:
        raise field_error("address_id", f"Address {body['address_id']} does not belong to customer {customer.id}.")
    fields = body.get("job_fields") or {}
    if fields.get("job_type_id") is not None and fields["job_type_id"] not in account.job_types:
        raise field_error("job_fields.job_type_id", f"Job type {fields['job_type_id']} not found.")
    if fields.get("business_unit_id") is not None and fields["business_unit_id"] not in account.business_units:
        raise field_error("job_fields.business_unit_id", f"Business unit {fields['business_unit_id']} not found.")
    number = body.get("invoice_number")
    if number is not None and any(j.invoice_number == str(int(number)) for j in account.jobs.values()):
        raise field_error("invoice_number", "Invoice number must be unique across the company's jobs.")
    schedule = body.get("schedule") or {}
    start, end = schedule.get("scheduled_start"), schedule.get("scheduled_end")
    for name, value in (("scheduled_start", start), ("scheduled_end", end)):
        if value is not None and parse_dt(str(value)) is None:
            raise field_error(f"schedule.{name}", "must be an ISO-8601 date-time")
    if start and end and parse_dt(str(end)) <= parse_dt(str(start)):  # type: ignore[operator]
        raise field_error("schedule.scheduled_end", "must be after scheduled_start")
    job = ctx.sandbox.create_job(account, customer, address, body)
    return 201, job.to_json(account)


def list_jobs(ctx: Ctx) -> tuple[int, Any]:
    q, account = ctx.query, ctx.account
    items = list(account.jobs.values())
    customer_id = q.text("customer_id")
    if customer_id is not None:
        items = [j for j in items if j.customer_id == customer_id]
    statuses = q.many("work_status")
    if statuses:
        unknown = [s for s in statuses if s not in WORK_STATUS_FILTER]
        if unknown:
            raise ApiError(400, f"work_status {unknown[0]!r} is not valid", {"work_status": ["is not valid"]})
        wanted = set().union(*(WORK_STATUS_FILTER[s] for s in statuses))
        items = [j for j in items if j.work_status in wanted]
    for name, attr, lower in (
        ("scheduled_start_min", "scheduled_start", True),
        ("scheduled_start_max", "scheduled_start", False),
        ("scheduled_end_min", "scheduled_end", True),
        ("scheduled_end_max", "scheduled_end", False),
    ):
        bound = q.dt(name)
        if bound is not None:
            items = [
                j
                for j in items
                if getattr(j, attr) is not None and (getattr(j, attr) >= bound if lower else getattr(j, attr) <= bound)
            ]
    keys = {
        "created_at": _ts("created_at"),
        "updated_at": _ts("updated_at"),
        "id": _ts("id"),
        "invoice_number": lambda j: int(j.invoice_number) if j.invoice_number.isdigit() else 0,
        "description": lambda j: j.description or "",
        "work_status": _ts("work_status"),
    }
    items = ctx.sort(items, keys)
    return 200, ctx.page(items, "jobs", lambda j: _expanded_job(ctx, j))


def get_job(ctx: Ctx) -> tuple[int, Any]:
    job = ctx.account.jobs.get(ctx.param("id"))
    if job is None:
        raise ApiError(404, "Job not found")
    return 200, _expanded_job(ctx, job)


def list_job_invoices(ctx: Ctx) -> tuple[int, Any]:
    job = ctx.account.jobs.get(ctx.param("job_id"))
    if job is None:
        raise ApiError(404, "Job not found")
    return 200, {"invoices": [ctx.account.invoices[i].to_json() for i in job.invoice_ids]}


# -- invoices, lookups, webhooks -------------------------------------------------------------------


def list_invoices(ctx: Ctx) -> tuple[int, Any]:
    q = ctx.query
    items = list(ctx.account.invoices.values())
    statuses = q.many("status")
    if statuses:
        unknown = [s for s in statuses if s not in INVOICE_STATUSES]
        if unknown:
            raise ApiError(400, f"status {unknown[0]!r} is not valid", {"status": ["is not valid"]})
        items = [i for i in items if i.status in statuses]
    customers = set(q.many("customer_uuid"))
    if customers:
        items = [i for i in items if i.customer_id in customers]
    for name, attr, lower in (
        ("created_at_min", "created_at", True),
        ("created_at_max", "created_at", False),
        ("due_at_min", "due_at", True),
        ("due_at_max", "due_at", False),
        ("paid_at_min", "paid_at", True),
        ("paid_at_max", "paid_at", False),
    ):
        bound = q.dt(name)
        if bound is not None:
            items = [
                i
                for i in items
                if getattr(i, attr) is not None and (getattr(i, attr) >= bound if lower else getattr(i, attr) <= bound)
            ]
    due_min, due_max = q.number("amount_due_min"), q.number("amount_due_max")
    if due_min is not None:
        items = [i for i in items if (0 if i.status == "paid" else i.amount) >= due_min]
    if due_max is not None:
        items = [i for i in items if (0 if i.status == "paid" else i.amount) <= due_max]
    keys = {
        "created_at": _ts("created_at"),
        "updated_at": _ts("updated_at"),
        "amount": _ts("amount"),
        "due_amount": lambda i: 0 if i.status == "paid" else i.amount,
        "due_at": _ts("due_at"),
        "invoice_number": _ts("invoice_number"),
        "paid_at": lambda i: i.paid_at or i.created_at,
        "sent_at": lambda i: i.sent_at or i.created_at,
        "status": _ts("status"),
    }
    items = ctx.sort(items, keys)
    return 200, ctx.page(items, "invoices", lambda i: i.to_json(with_job_id=True))


def list_lead_sources(ctx: Ctx) -> tuple[int, Any]:
    items = list(ctx.account.lead_sources.values())
    q = ctx.query.text("q")
    if q is not None:
        items = [s for s in items if q.strip().lower() in s.name.lower()]
    items = ctx.sort(items, {"created_at": _ts("created_at")})
    return 200, ctx.page(items, "lead_sources", lambda s: s.to_json())


def list_job_types(ctx: Ctx) -> tuple[int, Any]:
    items = sorted(ctx.account.job_types.values(), key=lambda t: t.created_at)
    name = ctx.query.text("name")
    if name is not None:
        items = [t for t in items if name.strip().lower() in t.name.lower()]
    return 200, ctx.page(items, "job_types", lambda t: t.to_json())


def list_tags(ctx: Ctx) -> tuple[int, Any]:
    items = ctx.sort(ctx.account.tags.values(), {"created_at": _ts("created_at"), "name": _ts("name")})
    return 200, ctx.page(items, "tags", lambda t: t.to_json())


def subscribe_webhooks(ctx: Ctx) -> tuple[int, Any]:
    ctx.account.webhook_subscribed = True
    return 200, {"subscribed": True, "company_id": ctx.account.company_id}


def unsubscribe_webhooks(ctx: Ctx) -> tuple[int, Any]:
    ctx.account.webhook_subscribed = False
    return 200, {"subscribed": False, "company_id": ctx.account.company_id}


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/customers", create_customer, True),
    Endpoint("GET", "/customers", list_customers),
    Endpoint("GET", "/customers/{customer_id}", get_customer),
    Endpoint("GET", "/customers/{customer_id}/addresses", list_addresses),
    Endpoint("POST", "/customers/{customer_id}/addresses", create_address, True),
    Endpoint("GET", "/customers/{customer_id}/addresses/{address_id}", get_address),
    Endpoint("POST", "/leads", create_lead, True),
    Endpoint("GET", "/leads", list_leads),
    Endpoint("GET", "/leads/{id}", get_lead),
    Endpoint("POST", "/leads/{id}/convert", convert_lead, True),
    Endpoint("POST", "/jobs", create_job, True),
    Endpoint("GET", "/jobs", list_jobs),
    Endpoint("GET", "/jobs/{id}", get_job),
    Endpoint("GET", "/jobs/{job_id}/invoices", list_job_invoices),
    Endpoint("GET", "/invoices", list_invoices),
    Endpoint("GET", "/lead_sources", list_lead_sources),
    Endpoint("GET", "/job_fields/job_types", list_job_types),
    Endpoint("GET", "/tags", list_tags),
    Endpoint("POST", "/webhooks/subscription", subscribe_webhooks, True),
    Endpoint("DELETE", "/webhooks/subscription", unsubscribe_webhooks),
)
