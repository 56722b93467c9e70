"""The ServiceTitan tenant API as the sandbox serves it: auth, rate limit, faults, then the resource handlers.

Every tenant call passes, in order: authentication (401/403) → 429 storm → token bucket per (app key,
tenant) → fault decision (latency, 5xx, hold, commit-then-fail) → body checks against the definitions and
ServiceTitan's business rules (400/404/409) → the handler. Handlers are synchronous: a record is checked
and written without yielding to the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from sandboxes.common.faults import after_commit, before_handling

from .auth import SCOPES
from .errors import ApiError, error_body, json_response, validation_error
from .queries import Query, apply_sort, filter_active, filter_dates, filter_ids, paginate, parse_dt
from .spec import Definitions
from .state import PRIORITIES, Booking, Contact, Job, Location, Sandbox, Tenant, fmt_dt

Handler = Callable[["Ctx"], tuple[int, Any]]


@dataclass
class Ctx:
    request: Request
    sandbox: Sandbox
    tenant: Tenant
    query: Query
    body: Any = None

    def path_int(self, name: str) -> int:
        return int(self.request.path_params[name])

    def page(self, items: list[Any], to_json: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        cfg = self.sandbox.config
        return paginate(items, self.query, to_json, default_size=cfg.default_page_size, max_size=cfg.max_page_size)


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # ServiceTitan's template, as in the definitions
    handler: Handler
    validate_body: bool = False

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def starlette_path(self) -> str:
        path = self.template.replace("{tenant}", "{tenant:int}").replace("{id}", "{id:int}")
        return path.replace("{booking_provider}", "{booking_provider:int}")


@dataclass
class TenantApi:
    sandbox: Sandbox
    definitions: Definitions

    # -- definitions ------------------------------------------------------------------------------
    async def definitions_ready(self) -> Definitions:
        if not self.definitions.loaded:
            await asyncio.to_thread(self.definitions.load)
        return self.definitions

    # -- the token endpoint ------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", "replace")
        ctype = request.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" not in ctype:
            return json_response(400, {"error": "invalid_request", "error_description": "form body expected"})
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic ") and not client_id:
            import base64
            import binascii

            try:
                client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return json_response(400, {"error": "invalid_client"})
        tenant = self.sandbox.tenant_by_client(client_id) if client_id else None
        grant = form.get("grant_type")
        if not grant:
            result = json_response(400, {"error": "invalid_request", "error_description": "grant_type is missing"})
        elif grant != "client_credentials":
            result = json_response(400, {"error": "unsupported_grant_type"})
        elif tenant is None or not _same(tenant.client_secret, client_secret):
            result = json_response(400, {"error": "invalid_client"})
        else:
            now = time.time()
            token, claims = self.sandbox.signer.issue(
                issuer=self.sandbox.config.issuer,
                tenant_id=tenant.tenant_id,
                client_id=tenant.client_id,
                now=now,
                lifetime_s=tenant.token_lifetime_s,
            )
            for jti in [j for j, exp in tenant.tokens.items() if exp <= now]:
                del tenant.tokens[jti]
            tenant.tokens[claims["jti"]] = float(claims["exp"])
            tenant.tokens_issued += 1
            result = json_response(
                200,
                {
                    "access_token": token,
                    "expires_in": int(tenant.token_lifetime_s),
                    "token_type": "Bearer",
                    "scope": " ".join(SCOPES),
                },
                headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
            )
        if tenant is not None:
            tenant.stats.record("POST /connect/token", result.status_code)
        else:
            self.sandbox.unattributed[f"POST /connect/token {result.status_code}"] += 1
        return result

    # -- the pipeline ------------------------------------------------------------------------------
    def _authenticate(self, request: Request, tenant_id: str) -> str:
        """The app key of an authorised call; raises 401/403 ApiError otherwise."""
        authz = request.headers.get("authorization", "")
        scheme, _, token = authz.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Authorization header with a Bearer access token is required.")
        claims = self.sandbox.signer.verify(token.strip())
        if claims is None:
            raise ApiError(401, "The access token is invalid.")
        issued_to = self.sandbox.tenant(str(claims.get("tenant")))
        if issued_to is None or not issued_to.token_live(
            str(claims.get("jti")), float(claims.get("exp", 0)), time.time()
        ):
            raise ApiError(401, "The access token has expired or was revoked.")
        app_key = request.headers.get("st-app-key", "").strip()
        if not app_key:
            raise ApiError(401, "The ST-App-Key header is required.")
        if issued_to.tenant_id != tenant_id:
            raise ApiError(
                403, "Provided authentication is insufficient to grant access: the token is for another tenant."
            )
        if app_key not in issued_to.app_keys:
            raise ApiError(403, "Provided authentication is insufficient to grant access: unknown application key.")
        return app_key

    def _record(self, tenant: Tenant | None, route: str, status: int | str) -> None:
        if tenant is not None:
            tenant.stats.record(route, status)
        else:
            self.sandbox.unattributed[f"{route} {status}"] += 1

    async def dispatch(self, endpoint: Endpoint, request: Request) -> Response:
        tenant_id = str(request.path_params["tenant"])
        tenant = self.sandbox.tenant(tenant_id)
        route = endpoint.route_key
        try:
            app_key = self._authenticate(request, tenant_id)
        except ApiError as exc:
            self._record(tenant, route, exc.status)
            return exc.response()
        assert tenant is not None  # authentication proves the path's tenant exists

        storm = tenant.faults.storm_answer(endpoint.method)
        admitted, retry_after = (False, storm) if storm is not None else tenant.bucket(app_key).try_take()
        if not admitted:
            tenant.stats.rate_limited += 1
            self._record(tenant, route, 429)
            return rate_limited(retry_after or 1)
        tenant.stats.accepted.append(time.monotonic())

        decision = tenant.faults.decide(endpoint.method, route)
        record = functools.partial(self._record, tenant, route)
        stopped = await before_handling(decision, lambda: tenant.faults.config.timeout_s, record, _error_answer)
        if stopped is not None:
            return stopped
        response = await self._handle(endpoint, request, tenant)
        return await after_commit(decision, lambda: tenant.faults.config.timeout_s, record, _error_answer, response)

    async def _handle(self, endpoint: Endpoint, request: Request, tenant: Tenant) -> Response:
        try:
            ctx = Ctx(request, self.sandbox, tenant, Query(request.query_params))
            if endpoint.validate_body:
                ctx.body = await self._read_body(endpoint, request)
            status, payload = endpoint.handler(ctx)
            return json_response(status, payload)
        except ApiError as exc:
            return exc.response()

    async def _read_body(self, endpoint: Endpoint, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            raise validation_error({"request": ["A non-empty request body is required."]})
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise validation_error({"$": [f"The JSON value could not be parsed: {exc}"]}) from None
        definitions = await self.definitions_ready()
        module = endpoint.template.lstrip("/").split("/", 1)[0]
        errors = definitions.body_errors(module, endpoint.method, endpoint.template, body)
        if errors:
            raise validation_error(errors)
        return body

    async def not_implemented(self, request: Request) -> Response:
        """Tenant paths the sandbox does not serve: authenticated like the rest, then 404."""
        tenant_id = str(request.path_params["tenant"])
        tenant = self.sandbox.tenant(tenant_id)
        route = f"{request.method} {request.url.path}"
        try:
            self._authenticate(request, tenant_id)
        except ApiError as exc:
            self._record(tenant, route, exc.status)
            return exc.response()
        self._record(tenant, "not implemented", 404)
        return ApiError(404, f"The sandbox does not implement {request.method} {request.url.path}.").response()


def _error_answer(status: int) -> Response:
    return json_response(status, error_body(status))


def rate_limited(retry_after: int) -> Response:
    body = error_body(429, f"Rate limit is exceeded. Try again in {retry_after} seconds.")
    return json_response(429, body, headers={"Retry-After": str(retry_after)})


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


# -- helpers shared by handlers ------------------------------------------------------------------


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def _digits(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return digits[-10:] if len(digits) > 10 else digits


def _ci(a: str | None, b: str) -> bool:
    return (a or "").strip().lower() == b.strip().lower()


def _external_match(records: Iterable[Any], q: Query) -> list[Any]:
    """externalDataKey + externalDataValues (both required, <= 50 values), scoped to externalDataApplicationGuid:
    data is only visible to the application GUID that wrote it, so without a GUID nothing matches."""
    key = q.text("externalDataKey")
    values = q.csv("externalDataValues")
    guid = q.guid("externalDataApplicationGuid")
    items = list(records)
    if key is None and not values:
        return items
    if key is None or not values:
        missing = "ExternalDataKey" if key is None else "ExternalDataValues"
        raise validation_error({missing: ["externalDataKey and externalDataValues must be provided together."]})
    if len(values) > 50:
        raise validation_error({"ExternalDataValues": ["At most 50 values are allowed."]})
    if guid is None:
        return []
    wanted = set(values)
    return [r for r in items if any(i["key"] == key and i["value"] in wanted for i in r.external_data.get(guid, []))]


def _check_refs(tenant: Tenant, body: dict[str, Any], errors: dict[str, list[str]], *, required: bool) -> None:
    for name, store, label in (
        ("businessUnitId", tenant.business_units, "Business unit"),
        ("jobTypeId", tenant.job_types, "Job type"),
        ("campaignId", tenant.campaigns, "Campaign"),
    ):
        value = body.get(name)
        if value is None:
            if required:
                errors.setdefault(_pascal(name), []).append(f"The {_pascal(name)} field is required.")
            continue
        if value not in store or not store[value].active:
            errors.setdefault(_pascal(name), []).append(f"{label} with id {value} was not found.")


def _blank_contacts(contacts: list[dict[str, Any]] | None, prefix: str, errors: dict[str, list[str]]) -> None:
    for i, contact in enumerate(contacts or []):
        if not str(contact.get("value", "")).strip():
            errors.setdefault(f"{prefix}[{i}].Value", []).append("The Value field is required.")


# -- bookings ------------------------------------------------------------------------------------


def _provider(ctx: Ctx, *, status: int) -> int:
    provider = ctx.path_int("booking_provider")
    if provider not in ctx.tenant.booking_provider_ids:
        if status == 404:
            raise ApiError(404, "Booking provider not found")
        raise validation_error({"BookingProvider": [f"Booking provider {provider} was not found."]})
    return provider


def create_booking(ctx: Ctx) -> tuple[int, Any]:
    tenant, body = ctx.tenant, ctx.body
    provider = _provider(ctx, status=400)
    errors: dict[str, list[str]] = {}
    for name in ("name", "source", "summary", "externalId"):
        if not str(body.get(name, "")).strip():
            errors.setdefault(_pascal(name), []).append(f"The {_pascal(name)} field is required.")
    if not body.get("address") and not body.get("contacts"):
        errors.setdefault("Address", []).append("A booking needs an address or at least one contact (phone or email).")
    customer_type = body.get("customerType")
    if customer_type is not None and customer_type not in ("Residential", "Commercial"):
        errors.setdefault("CustomerType", []).append(f"The value '{customer_type}' is not valid.")
    _blank_contacts(body.get("contacts"), "Contacts", errors)
    _check_refs(tenant, body, errors, required=False)
    if errors:
        raise validation_error(errors)
    now = tenant.clock.now()
    booking = Booking(
        id=tenant.new_id(),
        provider_id=provider,
        source=body["source"],
        name=body["name"],
        summary=body["summary"],
        external_id=body["externalId"],
        is_first_time_client=bool(body["isFirstTimeClient"]),
        start=parse_dt(body["start"]) if body.get("start") else now,
        created_on=now,
        modified_on=now,
        address=dict(body["address"]) if body.get("address") else None,
        contacts=tenant.add_contacts(body.get("contacts")),
        customer_type=customer_type,
        campaign_id=body.get("campaignId"),
        business_unit_id=body.get("businessUnitId"),
        job_type_id=body.get("jobTypeId"),
        priority=body.get("priority"),
        uploaded_images=body.get("uploadedImages"),
        send_confirmation_email=body.get("isSendConfirmationEmail"),
    )
    tenant.bookings[booking.id] = booking
    return 200, booking.to_json()


def _list_bookings(ctx: Ctx, provider: int | None) -> tuple[int, Any]:
    q = ctx.query
    items = [b for b in ctx.tenant.bookings.values() if provider is None or b.provider_id == provider]
    external_id = q.text("externalId")
    if external_id is not None:
        items = [b for b in items if b.external_id == external_id]
    items = filter_dates(filter_ids(items, q), q)
    items = apply_sort(
        items, q, {"Id": lambda b: b.id, "ModifiedOn": lambda b: b.modified_on, "CreatedOn": lambda b: b.created_on}
    )
    return 200, ctx.page(items, Booking.to_json)


def list_provider_bookings(ctx: Ctx) -> tuple[int, Any]:
    return _list_bookings(ctx, _provider(ctx, status=400))


def list_all_bookings(ctx: Ctx) -> tuple[int, Any]:
    return _list_bookings(ctx, None)


def get_provider_booking(ctx: Ctx) -> tuple[int, Any]:
    provider = _provider(ctx, status=404)
    booking = ctx.tenant.bookings.get(ctx.path_int("id"))
    if booking is None or booking.provider_id != provider:
        raise ApiError(404, "Booking not found")
    return 200, booking.to_json()


def get_any_booking(ctx: Ctx) -> tuple[int, Any]:
    booking = ctx.tenant.bookings.get(ctx.path_int("id"))
    if booking is None:
        raise ApiError(404, "Booking not found")
    return 200, booking.to_json()


# -- customers and locations ---------------------------------------------------------------------

ADDRESS_FILTERS = ("street", "unit", "city", "state", "zip", "country")


def _address_filters(items: list[Any], q: Query) -> list[Any]:
    for name in ADDRESS_FILTERS:
        value = q.text(name)
        if value is not None:
            items = [i for i in items if _ci(i.address.get(name), value)]
    return items


def create_customer(ctx: Ctx) -> tuple[int, Any]:
    tenant, body = ctx.tenant, ctx.body
    errors: dict[str, list[str]] = {}
    if not str(body.get("name", "")).strip():
        errors["Name"] = ["The Name field is required."]
    if not body.get("locations"):
        errors["Locations"] = ["A customer needs at least one location."]
    for i, loc in enumerate(body.get("locations") or []):
        if not str(loc.get("name", "")).strip():
            errors[f"Locations[{i}].Name"] = ["The Name field is required."]
        _blank_contacts(loc.get("contacts"), f"Locations[{i}].Contacts", errors)
    _blank_contacts(body.get("contacts"), "Contacts", errors)
    if errors:
        raise validation_error(errors)
    customer, locations = tenant.create_customer(
        name=body["name"],
        type_=body.get("type") or "Residential",
        address=body["address"],
        contacts=body.get("contacts"),
        locations=body["locations"],
        custom_fields=body.get("customFields"),
        do_not_mail=bool(body.get("doNotMail") or False),
        do_not_service=bool(body.get("doNotService") or False),
    )
    payload = customer.to_json()
    payload["locations"] = [loc.created_json() for loc in locations]
    payload["contacts"] = [c.to_json() for c in customer.contacts]
    return 200, payload


def list_customers(ctx: Ctx) -> tuple[int, Any]:
    q = ctx.query
    items = filter_active(ctx.tenant.customers.values(), q, lambda c: c.active)
    items = filter_dates(filter_ids(items, q), q)
    name = q.text("name")
    if name is not None:
        items = [c for c in items if name.strip().lower() in c.name.lower()]
    items = _address_filters(items, q)
    phone = q.text("phone")
    if phone is not None:
        wanted = _digits(phone)
        items = [
            c
            for c in items
            if wanted and any(p.type in ("Phone", "MobilePhone") and _digits(p.value) == wanted for p in c.contacts)
        ]
    items = _external_match(items, q)
    items = apply_sort(
        items,
        q,
        {
            "Id": lambda c: c.id,
            "ModifiedOn": lambda c: c.modified_on,
            "CreatedOn": lambda c: c.created_on,
            "Name": lambda c: c.name,
        },
    )
    return 200, ctx.page(items, lambda c: c.to_json())


def get_customer(ctx: Ctx) -> tuple[int, Any]:
    customer = ctx.tenant.customers.get(ctx.path_int("id"))
    if customer is None:
        raise ApiError(404, "Customer not found")
    return 200, customer.to_json()


PHONE_CONTACT_TYPES = ("Phone", "MobilePhone", "Fax")


def list_customer_contacts(ctx: Ctx) -> tuple[int, Any]:
    """`Customers_GetContactsList`: the customer's contacts (those it was created with and those its locations
    brought). The definitions require `phoneSettings` on every contact; e-mail contacts carry an empty number."""
    customer = ctx.tenant.customers.get(ctx.path_int("id"))
    if customer is None:
        raise ApiError(404, "Customer not found")
    modified = fmt_dt(customer.modified_on)

    def render(c: Contact) -> dict[str, Any]:
        number = c.value if c.type in PHONE_CONTACT_TYPES else ""
        return {**c.to_json(), "modifiedOn": modified, "phoneSettings": {"phoneNumber": number, "doNotText": False}}

    return 200, ctx.page(sorted(customer.contacts, key=lambda c: c.id), render)


def create_location(ctx: Ctx) -> tuple[int, Any]:
    tenant, body = ctx.tenant, ctx.body
    customer = tenant.customers.get(body["customerId"])
    if customer is None:
        raise ApiError(409, "Unknown customer")
    errors: dict[str, list[str]] = {}
    if not str(body.get("name", "")).strip():
        errors["Name"] = ["The Name field is required."]
    _blank_contacts(body.get("contacts"), "Contacts", errors)
    if errors:
        raise validation_error(errors)
    location = tenant.create_location(customer, body)
    return 200, location.created_json()


def list_locations(ctx: Ctx) -> tuple[int, Any]:
    q = ctx.query
    items = filter_active(ctx.tenant.locations.values(), q, lambda loc: loc.active)
    items = filter_dates(filter_ids(items, q), q)
    customer_id = q.integer("customerId")
    if customer_id is not None:
        items = [loc for loc in items if loc.customer_id == customer_id]
    name = q.text("name")
    if name is not None:
        items = [loc for loc in items if name.strip().lower() in loc.name.lower()]
    items = _address_filters(items, q)
    items = _external_match(items, q)
    items = apply_sort(
        items, q, {"Id": lambda x: x.id, "ModifiedOn": lambda x: x.modified_on, "CreatedOn": lambda x: x.created_on}
    )
    return 200, ctx.page(items, Location.to_json)


def get_location(ctx: Ctx) -> tuple[int, Any]:
    location = ctx.tenant.locations.get(ctx.path_int("id"))
    if location is None:
        raise ApiError(404, "Location not found")
    return 200, location.to_json()


# -- jobs ----------------------------------------------------------------------------------------


def create_job(ctx: Ctx) -> tuple[int, Any]:
    tenant, body = ctx.tenant, ctx.body
    errors: dict[str, list[str]] = {}
    customer = tenant.customers.get(body["customerId"])
    if customer is None:
        errors["CustomerId"] = [f"Customer with id {body['customerId']} was not found."]
    location = tenant.locations.get(body["locationId"])
    if location is None:
        errors["LocationId"] = [f"Location with id {body['locationId']} was not found."]
    elif customer is not None and location.customer_id != customer.id:
        errors["LocationId"] = [f"Location {location.id} does not belong to customer {customer.id}."]
    _check_refs(tenant, body, errors, required=True)
    if body["priority"] not in PRIORITIES:
        errors["Priority"] = [f"The value '{body['priority']}' is not valid. Allowed values: {', '.join(PRIORITIES)}."]
    appointments: list[dict[str, datetime | list[int] | None]] = []
    if not body["appointments"]:
        errors["Appointments"] = ["A job needs at least one appointment."]
    for i, appt in enumerate(body["appointments"]):
        start, end = parse_dt(appt["start"]), parse_dt(appt["end"])
        if end <= start:
            errors[f"Appointments[{i}].End"] = ["The appointment must end after it starts."]
        appointments.append(
            {
                "start": start,
                "end": end,
                "arrivalWindowStart": parse_dt(appt["arrivalWindowStart"]) if appt.get("arrivalWindowStart") else None,
                "arrivalWindowEnd": parse_dt(appt["arrivalWindowEnd"]) if appt.get("arrivalWindowEnd") else None,
                "technicianIds": list(appt.get("technicianIds") or []),
            }
        )
    external = body.get("externalData")
    if external:
        for i, item in enumerate(external["externalData"]):
            if not str(item["key"]).strip():
                errors[f"ExternalData.ExternalData[{i}].Key"] = ["The Key field is required."]
    if errors:
        raise validation_error(errors)
    job = tenant.create_job(
        customer_id=body["customerId"],
        location_id=body["locationId"],
        business_unit_id=body["businessUnitId"],
        job_type_id=body["jobTypeId"],
        priority=body["priority"],
        campaign_id=body["campaignId"],
        appointments=appointments,
        summary=body.get("summary"),
        custom_fields=body.get("customFields"),
        tag_type_ids=body.get("tagTypeIds"),
        external_data=external,
    )
    guid = str(external["applicationGuid"]).lower() if external else None
    return 200, job.to_json(guid)


JOB_STATUS_NAMES = {s.lower(): s for s in ("Scheduled", "Dispatched", "InProgress", "Hold", "Completed", "Canceled")}


def list_jobs(ctx: Ctx) -> tuple[int, Any]:
    q = ctx.query
    items = filter_dates(filter_ids(ctx.tenant.jobs.values(), q), q)
    for name, attr in (
        ("bookingId", "booking_id"),
        ("customerId", "customer_id"),
        ("locationId", "location_id"),
        ("jobTypeId", "job_type_id"),
        ("campaignId", "campaign_id"),
        ("businessUnitId", "business_unit_id"),
        ("invoiceId", "invoice_id"),
    ):
        value = q.integer(name)
        if value is not None:
            items = [j for j in items if getattr(j, attr) == value]
    number = q.text("number")
    if number is not None:
        items = [j for j in items if j.number == number]
    statuses = q.csv("jobStatus")
    if statuses:
        unknown = [s for s in statuses if s.lower() not in JOB_STATUS_NAMES]
        if unknown:
            raise validation_error({"JobStatus": [f"The value '{unknown[0]}' is not valid."]})
        wanted = {JOB_STATUS_NAMES[s.lower()] for s in statuses}
        items = [j for j in items if j.status in wanted]
    priority = q.text("priority")
    if priority is not None:
        items = [j for j in items if _ci(j.priority, priority)]
    coa, cb = q.dt("completedOnOrAfter"), q.dt("completedBefore")
    if coa is not None:
        items = [j for j in items if j.completed_on is not None and j.completed_on >= coa]
    if cb is not None:
        items = [j for j in items if j.completed_on is not None and j.completed_on < cb]
    items = _external_match(items, q)
    items = apply_sort(
        items,
        q,
        {
            "Id": lambda j: j.id,
            "ModifiedOn": lambda j: j.modified_on,
            "CreatedOn": lambda j: j.created_on,
            "Priority": lambda j: PRIORITIES.index(j.priority) if j.priority in PRIORITIES else -1,
        },
    )
    guid = q.guid("externalDataApplicationGuid")
    return 200, ctx.page(items, lambda j: j.to_json(guid))


def get_job(ctx: Ctx) -> tuple[int, Any]:
    job: Job | None = ctx.tenant.jobs.get(ctx.path_int("id"))
    if job is None:
        raise ApiError(404, "Job not found")
    return 200, job.to_json(ctx.query.guid("externalDataApplicationGuid"))


# -- lookups and invoices ------------------------------------------------------------------------


def _lookup_store(ctx: Ctx, attr: str) -> dict[int, Any]:
    store: dict[int, Any] = getattr(ctx.tenant, attr)
    return store


def _lookup_list(attr: str) -> Handler:
    """Business units, job types, campaigns: ids, name (contains), active, date filters, paging."""

    def handler(ctx: Ctx) -> tuple[int, Any]:
        q = ctx.query
        items = filter_active(_lookup_store(ctx, attr).values(), q, lambda x: bool(x.active))
        items = filter_dates(filter_ids(items, q), q)
        name = q.text("name")
        if name is not None:
            items = [x for x in items if name.strip().lower() in x.name.lower()]
        return 200, ctx.page(sorted(items, key=lambda x: x.id), lambda x: x.to_json())

    return handler


def _lookup_get(attr: str, title: str, *, missing: int = 404) -> Handler:
    """Get by id. `missing`: the status for an unknown id — 400 where the definition declares no 404."""

    def handler(ctx: Ctx) -> tuple[int, Any]:
        item = _lookup_store(ctx, attr).get(ctx.path_int("id"))
        if item is None:
            if missing == 404:
                raise ApiError(404, title)
            raise validation_error({"Id": [title]})
        return 200, item.to_json()

    return handler


def list_invoices(ctx: Ctx) -> tuple[int, Any]:
    q = ctx.query
    items = filter_dates(filter_ids(ctx.tenant.invoices.values(), q), q)
    for name, attr in (("jobId", "job_id"), ("customerId", "customer_id"), ("businessUnitId", "business_unit_id")):
        value = q.integer(name)
        if value is not None:
            items = [i for i in items if getattr(i, attr) == value]
    for name in ("jobNumber", "number"):
        value_s = q.text(name)
        if value_s is not None:
            items = [i for i in items if i.job_number == value_s]
    greater, less = q.number("totalGreater"), q.number("totalLess")
    if greater is not None:
        items = [i for i in items if i.total > Decimal(str(greater))]
    if less is not None:
        items = [i for i in items if i.total < Decimal(str(less))]
    return 200, ctx.page(sorted(items, key=lambda i: i.id), lambda i: i.to_json())


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/crm/v2/tenant/{tenant}/booking-provider/{booking_provider}/bookings", create_booking, True),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/booking-provider/{booking_provider}/bookings", list_provider_bookings),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/booking-provider/{booking_provider}/bookings/{id}", get_provider_booking),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/bookings", list_all_bookings),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/bookings/{id}", get_any_booking),
    Endpoint("POST", "/crm/v2/tenant/{tenant}/customers", create_customer, True),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/customers", list_customers),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/customers/{id}", get_customer),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/customers/{id}/contacts", list_customer_contacts),
    Endpoint("POST", "/crm/v2/tenant/{tenant}/locations", create_location, True),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/locations", list_locations),
    Endpoint("GET", "/crm/v2/tenant/{tenant}/locations/{id}", get_location),
    Endpoint("POST", "/jpm/v2/tenant/{tenant}/jobs", create_job, True),
    Endpoint("GET", "/jpm/v2/tenant/{tenant}/jobs", list_jobs),
    Endpoint("GET", "/jpm/v2/tenant/{tenant}/jobs/{id}", get_job),
    Endpoint("GET", "/jpm/v2/tenant/{tenant}/job-types", _lookup_list("job_types")),
    Endpoint("GET", "/jpm/v2/tenant/{tenant}/job-types/{id}", _lookup_get("job_types", "Job type not found")),
    Endpoint("GET", "/settings/v2/tenant/{tenant}/business-units", _lookup_list("business_units")),
    Endpoint(
        "GET",
        "/settings/v2/tenant/{tenant}/business-units/{id}",
        _lookup_get("business_units", "Business unit not found"),
    ),
    Endpoint("GET", "/marketing/v2/tenant/{tenant}/campaigns", _lookup_list("campaigns")),
    Endpoint(
        "GET",
        "/marketing/v2/tenant/{tenant}/campaigns/{id}",
        _lookup_get("campaigns", "Campaign not found", missing=400),
    ),
    Endpoint("GET", "/accounting/v2/tenant/{tenant}/invoices", list_invoices),
)
