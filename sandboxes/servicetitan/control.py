"""The sandbox's own control API under `/_sandbox/...` (not ServiceTitan's): tenants, limits, faults, record
lifecycle, the office, inspection. Documented with examples in docs/sandbox.md."""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes.common.control import ControlError, Endpoint, amount, office_routes, opt, read_json, route_table

from .config import AppliesTo, ConfigError, parse_faults, parse_office
from .errors import json_response
from .office import Office
from .spec import Definitions
from .state import Sandbox, Tenant, TransitionError


class Control:
    def __init__(self, sandbox: Sandbox, office: Office, definitions: Definitions) -> None:
        self.sandbox = sandbox
        self.office = office
        self.definitions = definitions

    def _tenant(self, request: Request) -> Tenant:
        tenant = self.sandbox.tenant(str(request.path_params["tenant"]))
        if tenant is None:
            raise ControlError(404, f"unknown tenant {request.path_params['tenant']}")
        return tenant

    # -- service ---------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return json_response(
            200,
            {
                "status": "ok",
                "definitions_loaded": self.definitions.loaded,
                "tenants": len(self.sandbox.tenants),
                "office_enabled": self.sandbox.office.enabled,
                "uptime_s": round(time.time() - self.sandbox.started_at, 3),
            },
        )

    async def reset(self, request: Request) -> Response:
        self.sandbox.reset()
        self.office.reset()
        return json_response(200, {"status": "reset", "tenants": sorted(self.sandbox.tenants)})

    # -- tenants ---------------------------------------------------------------------------------
    async def list_tenants(self, request: Request) -> Response:
        return json_response(200, {"tenants": [t.describe() for _, t in sorted(self.sandbox.tenants.items())]})

    async def create_tenant(self, request: Request) -> Response:
        body = await read_json(request)
        allowed = {
            "tenant_id",
            "client_id",
            "client_secret",
            "app_key",
            "external_data_guid",
            "booking_provider_id",
            "business_unit_id",
            "job_type_id",
            "campaign_id",
            "rate",
            "burst",
            "token_lifetime_s",
            "name",
        }
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ControlError(422, "unknown field", unknown[0])
        tenant_id = body.get("tenant_id")
        if tenant_id is not None and (not str(tenant_id).isdigit() or isinstance(tenant_id, bool)):
            raise ControlError(422, "tenant_id must be a positive integer (as ServiceTitan's)", "tenant_id")
        rate, burst = opt(body, "rate", (int, float)), opt(body, "burst", int)
        if rate is not None and rate <= 0:
            raise ControlError(422, "rate must be > 0", "rate")
        if burst is not None and burst < 1:
            raise ControlError(422, "burst must be >= 1", "burst")
        lifetime = opt(body, "token_lifetime_s", (int, float))
        if lifetime is not None and lifetime <= 0:
            raise ControlError(422, "token_lifetime_s must be > 0", "token_lifetime_s")
        try:
            tenant = self.sandbox.create_tenant(
                tenant_id=str(tenant_id) if tenant_id is not None else None,
                client_id=opt(body, "client_id", str),
                client_secret=opt(body, "client_secret", str),
                app_key=opt(body, "app_key", str),
                external_data_guid=opt(body, "external_data_guid", str),
                booking_provider_id=opt(body, "booking_provider_id", int),
                business_unit_id=opt(body, "business_unit_id", int),
                job_type_id=opt(body, "job_type_id", int),
                campaign_id=opt(body, "campaign_id", int),
                rate=float(rate) if rate is not None else None,
                burst=burst,
                token_lifetime_s=float(lifetime) if lifetime is not None else None,
                label=opt(body, "name", str),
            )
        except ValueError as exc:
            raise ControlError(409, str(exc)) from None
        return json_response(201, tenant.describe(with_secret=True))

    async def get_tenant(self, request: Request) -> Response:
        return json_response(200, self._tenant(request).describe(with_secret=True))

    async def patch_tenant(self, request: Request) -> Response:
        tenant = self._tenant(request)
        body = await read_json(request)
        unknown = sorted(set(body) - {"rate", "burst", "token_lifetime_s", "app_keys"})
        if unknown:
            raise ControlError(422, "unknown field", unknown[0])
        if "rate" in body or "burst" in body:
            self._set_rate(tenant, body)
        lifetime = opt(body, "token_lifetime_s", (int, float))
        if lifetime is not None:
            if lifetime <= 0:
                raise ControlError(422, "token_lifetime_s must be > 0", "token_lifetime_s")
            tenant.token_lifetime_s = float(lifetime)
        keys = body.get("app_keys")
        if keys is not None:
            if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
                raise ControlError(422, "app_keys must be a non-empty list of strings", "app_keys")
            tenant.app_keys = set(keys)
        return json_response(200, tenant.describe())

    def _set_rate(self, tenant: Tenant, body: dict[str, Any]) -> None:
        rate = opt(body, "rate", (int, float))
        burst = opt(body, "burst", int)
        rate = float(rate) if rate is not None else tenant.rate
        burst = burst if burst is not None else max(1, math.ceil(rate))
        if rate <= 0 or burst < 1:
            raise ControlError(422, "rate must be > 0 and burst >= 1", "rate")
        tenant.set_rate_limit(rate, burst)

    async def put_rate_limit(self, request: Request) -> Response:
        tenant = self._tenant(request)
        body = await read_json(request)
        if "rate" not in body:
            raise ControlError(422, "rate is required", "rate")
        self._set_rate(tenant, body)
        return json_response(200, {"rate": tenant.rate, "burst": tenant.burst})

    # -- faults ----------------------------------------------------------------------------------
    async def put_faults(self, request: Request) -> Response:
        tenant = self._tenant(request)
        try:
            config = parse_faults(await read_json(request))
        except ConfigError as exc:
            raise ControlError(422, exc.message, exc.field) from None
        tenant.faults.configure(config)
        return json_response(200, {"faults": config.to_json()})

    async def get_faults(self, request: Request) -> Response:
        tenant = self._tenant(request)
        return json_response(200, {"faults": tenant.faults.config.to_json()})

    async def clear_faults(self, request: Request) -> Response:
        tenant = self._tenant(request)
        tenant.faults.clear()
        return json_response(200, {"faults": tenant.faults.config.to_json()})

    async def storm(self, request: Request) -> Response:
        tenant = self._tenant(request)
        body = await read_json(request)
        seconds = opt(body, "seconds", (int, float))
        if seconds is None or seconds <= 0:
            raise ControlError(422, "seconds must be > 0", "seconds")
        retry_after = opt(body, "retry_after", int)
        if retry_after is not None and retry_after < 1:
            raise ControlError(422, "retry_after must be >= 1", "retry_after")
        applies_to = body.get("applies_to", "all")
        if applies_to not in ("all", "writes"):
            raise ControlError(422, "applies_to must be all or writes", "applies_to")
        typed: AppliesTo = "all" if applies_to == "all" else "writes"
        tenant.faults.start_storm(float(seconds), retry_after, typed)
        return json_response(
            200, {"storm_seconds": seconds, "retry_after": tenant.faults.storm_retry_after, "applies_to": typed}
        )

    async def revoke_tokens(self, request: Request) -> Response:
        tenant = self._tenant(request)
        return json_response(200, {"revoked": tenant.revoke_tokens()})

    # -- record lifecycle ------------------------------------------------------------------------
    async def advance_booking(self, request: Request) -> Response:
        tenant = self._tenant(request)
        booking = tenant.bookings.get(int(request.path_params["id"]))
        if booking is None:
            raise ControlError(404, "unknown booking")
        body = await read_json(request)
        status = body.get("status")
        if status not in ("Accepted", "Dismissed", "Converted"):
            raise ControlError(422, "status must be Accepted, Dismissed or Converted", "status")
        reason = opt(body, "dismissing_reason_id", int)
        try:
            tenant.advance_booking(booking, status, dismissing_reason_id=reason)
        except TransitionError as exc:
            raise ControlError(409, str(exc)) from None
        out: dict[str, Any] = {"booking": booking.to_json()}
        if booking.job_id is not None:
            out["job"] = tenant.jobs[booking.job_id].to_json(tenant.external_data_guid)
        return json_response(200, out)

    async def advance_job(self, request: Request) -> Response:
        tenant = self._tenant(request)
        job = tenant.jobs.get(int(request.path_params["id"]))
        if job is None:
            raise ControlError(404, "unknown job")
        body = await read_json(request)
        status = body.get("status")
        if not isinstance(status, str):
            raise ControlError(422, "status is required", "status")
        total = amount(body.get("invoice_total"), "invoice_total")
        try:
            tenant.advance_job(job, status, total=total)
        except TransitionError as exc:
            raise ControlError(409, str(exc)) from None
        out: dict[str, Any] = {"job": job.to_json(tenant.external_data_guid)}
        if job.invoice_id is not None:
            out["invoice"] = tenant.invoices[job.invoice_id].to_json()
        return json_response(200, out)

    async def adjust_invoice(self, request: Request) -> Response:
        """The back office edits an invoice after its job completed: a new total, a new `modifiedOn`; the job's
        own `modifiedOn` does not move (as when an invoice is corrected in ServiceTitan)."""
        tenant = self._tenant(request)
        invoice = tenant.invoices.get(int(request.path_params["id"]))
        if invoice is None:
            raise ControlError(404, "unknown invoice")
        total = amount((await read_json(request)).get("total"), "total")
        if total is None:
            raise ControlError(422, "total is required", "total")
        tenant.adjust_invoice(invoice, total)
        return json_response(200, {"invoice": invoice.to_json()})

    # -- inspection ------------------------------------------------------------------------------
    async def inspect(self, request: Request) -> Response:
        tenant = self._tenant(request)
        with_ts = request.query_params.get("timestamps", "").lower() in ("1", "true", "yes")
        return json_response(200, tenant.inspect(with_timestamps=with_ts))

    async def inspect_all(self, request: Request) -> Response:
        tenants = {tid: t.inspect() for tid, t in sorted(self.sandbox.tenants.items())}
        return json_response(200, {"tenants": tenants, "unattributed": dict(self.sandbox.unattributed)})

    def routes(self) -> list[Route]:
        p = "/_sandbox"
        t = p + "/tenants/{tenant}"
        table: list[tuple[str, str, Endpoint]] = [
            ("GET", p + "/health", self.health),
            ("POST", p + "/reset", self.reset),
            ("GET", p + "/inspect", self.inspect_all),
            ("GET", p + "/tenants", self.list_tenants),
            ("POST", p + "/tenants", self.create_tenant),
            ("GET", t, self.get_tenant),
            ("PATCH", t, self.patch_tenant),
            ("PUT", t + "/rate-limit", self.put_rate_limit),
            ("GET", t + "/faults", self.get_faults),
            ("PUT", t + "/faults", self.put_faults),
            ("DELETE", t + "/faults", self.clear_faults),
            ("POST", t + "/storm", self.storm),
            ("POST", t + "/revoke-tokens", self.revoke_tokens),
            ("POST", t + "/bookings/{id:int}/advance", self.advance_booking),
            ("POST", t + "/jobs/{id:int}/advance", self.advance_job),
            ("POST", t + "/invoices/{id:int}/adjust", self.adjust_invoice),
            ("GET", t + "/inspect", self.inspect),
            *office_routes(self.office, parse_office, p),
        ]
        return route_table(table)
