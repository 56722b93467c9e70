"""The sandbox's own control API under `/_sandbox/...` (not Housecall Pro's): accounts, limits, faults, record
lifecycle, the office, events, inspection. Same shape as the ServiceTitan sandbox's (accounts in place of
tenants). Documented with examples in docs/sandbox.md."""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes.common.config import AppliesTo
from sandboxes.common.control import ControlError, Endpoint, amount, office_routes, opt, read_json, route_table

from .config import RETRY_AFTER_MODES, ConfigError, RetryAfterMode, parse_hcp_faults, parse_office
from .errors import json_response
from .office import Office
from .spec import Definitions
from .state import DEFAULT_MARKER_PATTERN, Account, Sandbox, TransitionError, parse_dt


def _cents(raw: Any, name: str) -> int | None:
    """A JSON number of dollars >= 0 as integer cents (None when absent)."""
    value = amount(raw, name)
    return None if value is None else int((value * 100).to_integral_value())


def _retry_mode(body: dict[str, Any]) -> RetryAfterMode | None:
    mode = body.get("retry_after")
    if mode is None:
        return None
    if mode not in RETRY_AFTER_MODES:
        raise ControlError(422, f"retry_after must be one of {', '.join(RETRY_AFTER_MODES)}", "retry_after")
    out: RetryAfterMode = mode
    return out


class Control:
    def __init__(self, sandbox: Sandbox, office: Office, definitions: Definitions) -> None:
        self.sandbox = sandbox
        self.office = office
        self.definitions = definitions

    def _account(self, request: Request) -> Account:
        account = self.sandbox.account(str(request.path_params["account"]))
        if account is None:
            raise ControlError(404, f"unknown account {request.path_params['account']}")
        return account

    # -- service ---------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return json_response(
            200,
            {
                "status": "ok",
                "provider": "housecallpro",
                "definitions_loaded": self.definitions.loaded,
                "accounts": len(self.sandbox.accounts),
                "office_enabled": self.sandbox.office.enabled,
                "listeners": len(self.sandbox.listeners),
                "uptime_s": round(time.time() - self.sandbox.started_at, 3),
            },
        )

    async def reset(self, request: Request) -> Response:
        self.sandbox.reset()
        self.office.reset()
        return json_response(200, {"status": "reset", "accounts": sorted(self.sandbox.accounts)})

    # -- accounts --------------------------------------------------------------------------------
    async def list_accounts(self, request: Request) -> Response:
        return json_response(200, {"accounts": [a.describe() for _, a in sorted(self.sandbox.accounts.items())]})

    async def create_account(self, request: Request) -> Response:
        body = await read_json(request)
        unknown = sorted(set(body) - {"company_id", "name", "api_key", "api_keys", "rate", "burst", "retry_after"})
        if unknown:
            raise ControlError(422, "unknown field", unknown[0])
        keys = body.get("api_keys")
        if keys is not None and (
            not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys)
        ):
            raise ControlError(422, "api_keys must be a non-empty list of strings", "api_keys")
        key = opt(body, "api_key", str)
        if key is not None:
            keys = [key, *(keys or [])]
        rate, burst = opt(body, "rate", (int, float)), opt(body, "burst", int)
        if rate is not None and rate <= 0:
            raise ControlError(422, "rate must be > 0", "rate")
        if burst is not None and burst < 1:
            raise ControlError(422, "burst must be >= 1", "burst")
        company_id = opt(body, "company_id", str)
        if company_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", company_id):
            raise ControlError(422, "company_id must be 1-64 letters, digits, _ . -", "company_id")
        try:
            account = self.sandbox.create_account(
                company_id=company_id,
                name=opt(body, "name", str),
                api_keys=keys,
                rate=float(rate) if rate is not None else None,
                burst=burst,
                retry_after=_retry_mode(body),
            )
        except ValueError as exc:
            raise ControlError(409, str(exc)) from None
        return json_response(201, account.describe(with_keys=True))

    async def get_account(self, request: Request) -> Response:
        return json_response(200, self._account(request).describe(with_keys=True))

    async def delete_account(self, request: Request) -> Response:
        account = self._account(request)
        self.sandbox.delete_account(account.company_id)
        return json_response(200, {"deleted": account.company_id})

    async def patch_account(self, request: Request) -> Response:
        account = self._account(request)
        body = await read_json(request)
        unknown = sorted(set(body) - {"name", "rate", "burst", "retry_after", "api_keys"})
        if unknown:
            raise ControlError(422, "unknown field", unknown[0])
        if any(k in body for k in ("rate", "burst", "retry_after")):
            self._set_rate(account, body)
        name = opt(body, "name", str)
        if name is not None:
            account.name = name
        keys = body.get("api_keys")
        if keys is not None:
            if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
                raise ControlError(422, "api_keys must be a non-empty list of strings", "api_keys")
            for key in keys:
                owner = self.sandbox.account_by_key(key)
                if owner is not None and owner is not account:
                    raise ControlError(409, "api key already used by another account", "api_keys")
            account.api_keys = set(keys)
        return json_response(200, account.describe(with_keys=True))

    def _set_rate(self, account: Account, body: dict[str, Any]) -> None:
        rate = opt(body, "rate", (int, float))
        burst = opt(body, "burst", int)
        rate = float(rate) if rate is not None else account.rate
        burst = burst if burst is not None else max(1, math.ceil(rate))
        if rate <= 0 or burst < 1:
            raise ControlError(422, "rate must be > 0 and burst >= 1", "rate")
        account.set_rate_limit(rate, burst, _retry_mode(body))

    async def put_rate_limit(self, request: Request) -> Response:
        account = self._account(request)
        body = await read_json(request)
        if "rate" not in body:
            raise ControlError(422, "rate is required", "rate")
        self._set_rate(account, body)
        return json_response(200, {"rate": account.rate, "burst": account.burst, "retry_after": account.retry_after})

    # -- faults ----------------------------------------------------------------------------------
    async def put_faults(self, request: Request) -> Response:
        account = self._account(request)
        try:
            config = parse_hcp_faults(await read_json(request))
        except ConfigError as exc:
            raise ControlError(422, exc.message, exc.field) from None
        account.faults.configure(config)
        return json_response(200, {"faults": config.to_json()})

    async def get_faults(self, request: Request) -> Response:
        return json_response(200, {"faults": self._account(request).faults.config.to_json()})

    async def clear_faults(self, request: Request) -> Response:
        account = self._account(request)
        account.faults.clear()
        account.storm_header = True
        return json_response(200, {"faults": account.faults.config.to_json()})

    async def storm(self, request: Request) -> Response:
        """Every call (or every write) is answered 429 for `seconds`; with `Retry-After: retry_after` (default:
        the storm's remaining length, rounded up) unless `retry_after_header` is false."""
        account = self._account(request)
        body = await read_json(request)
        seconds = opt(body, "seconds", (int, float))
        if seconds is None or seconds <= 0:
            raise ControlError(422, "seconds must be > 0", "seconds")
        retry_after = opt(body, "retry_after", int)
        if retry_after is not None and retry_after < 1:
            raise ControlError(422, "retry_after must be >= 1", "retry_after")
        header = body.get("retry_after_header", True)
        if not isinstance(header, bool):
            raise ControlError(422, "retry_after_header must be true or false", "retry_after_header")
        applies_to = body.get("applies_to", "all")
        if applies_to not in ("all", "writes"):
            raise ControlError(422, "applies_to must be all or writes", "applies_to")
        typed: AppliesTo = "all" if applies_to == "all" else "writes"
        account.faults.start_storm(float(seconds), retry_after, typed)
        account.storm_header = header
        return json_response(
            200,
            {
                "storm_seconds": seconds,
                "retry_after": account.faults.storm_retry_after if header else None,
                "applies_to": typed,
            },
        )

    # -- record lifecycle ------------------------------------------------------------------------
    async def advance_lead(self, request: Request) -> Response:
        """{"status": "won"} converts the lead into a job (or {"status": "won", "to": "estimate"}); "lost"."""
        account = self._account(request)
        lead = account.leads.get(str(request.path_params["id"]))
        if lead is None:
            raise ControlError(404, "unknown lead")
        body = await read_json(request)
        status, to = body.get("status"), body.get("to", "job")
        if status not in ("won", "lost") or to not in ("job", "estimate"):
            raise ControlError(422, "status must be won or lost (to: job or estimate)", "status")
        try:
            if status == "lost":
                self.sandbox.lose_lead(account, lead)
            else:
                self.sandbox.convert_lead(account, lead, to)
        except TransitionError as exc:
            raise ControlError(409, str(exc)) from None
        out: dict[str, Any] = {"lead": lead.to_json(account)}
        if lead.job_id is not None:
            out["job"] = account.jobs[lead.job_id].to_json(account)
        if lead.estimate_id is not None:
            out["estimate_id"] = lead.estimate_id
        return json_response(200, out)

    async def advance_job(self, request: Request) -> Response:
        """{"status": "scheduled" [, "start": ISO]} | "in_progress" | "completed" [, "invoice_total": dollars] |
        "canceled" [, "by": "pro"|"user"]."""
        account = self._account(request)
        job = account.jobs.get(str(request.path_params["id"]))
        if job is None:
            raise ControlError(404, "unknown job")
        body = await read_json(request)
        status = body.get("status")
        total = _cents(body.get("invoice_total"), "invoice_total")
        try:
            if status == "scheduled":
                start = parse_dt(str(body["start"])) if body.get("start") else None
                start = start or (self.sandbox.clock.now() + timedelta(days=1)).replace(microsecond=0)
                self.sandbox.schedule_job(account, job, start, start + timedelta(hours=2), 60)
            elif status == "in_progress":
                self.sandbox.start_job(account, job)
            elif status == "completed":
                self.sandbox.complete_job(account, job, total)
            elif status == "canceled":
                by = body.get("by", "pro")
                if by not in ("pro", "user"):
                    raise ControlError(422, "by must be pro or user", "by")
                self.sandbox.cancel_job(account, job, by=by)
            else:
                raise ControlError(422, "status must be scheduled, in_progress, completed or canceled", "status")
        except TransitionError as exc:
            raise ControlError(409, str(exc)) from None
        out: dict[str, Any] = {"job": job.to_json(account)}
        if job.invoice_ids:
            out["invoice"] = account.invoices[job.invoice_ids[-1]].to_json(with_job_id=True)
        return json_response(200, out)

    async def pay_invoice(self, request: Request) -> Response:
        account = self._account(request)
        invoice = account.invoices.get(str(request.path_params["id"]))
        if invoice is None:
            raise ControlError(404, "unknown invoice")
        try:
            self.sandbox.pay_invoice(account, invoice)
        except TransitionError as exc:
            raise ControlError(409, str(exc)) from None
        return json_response(200, {"invoice": invoice.to_json(with_job_id=True)})

    # -- inspection ------------------------------------------------------------------------------
    def _pattern(self, request: Request) -> str:
        pattern = request.query_params.get("pattern") or DEFAULT_MARKER_PATTERN
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ControlError(422, f"pattern is not a regular expression: {exc}", "pattern") from None
        if regex.groups > 1:
            raise ControlError(422, "pattern may have at most one group (the marker)", "pattern")
        return pattern

    async def inspect(self, request: Request) -> Response:
        account = self._account(request)
        with_ts = request.query_params.get("timestamps", "").lower() in ("1", "true", "yes")
        return json_response(200, account.inspect(pattern=self._pattern(request), with_timestamps=with_ts))

    async def inspect_all(self, request: Request) -> Response:
        pattern = self._pattern(request)
        accounts = {cid: a.inspect(pattern=pattern) for cid, a in sorted(self.sandbox.accounts.items())}
        return json_response(200, {"accounts": accounts, "unattributed": dict(self.sandbox.unattributed)})

    async def events(self, request: Request) -> Response:
        """The last events emitted (ids, kinds, record ids; no record bodies) and how many in all."""
        return json_response(200, {"emitted": self.sandbox.events_emitted, "events": list(self.sandbox.events)})

    def routes(self) -> list[Route]:
        p = "/_sandbox"
        a = p + "/accounts/{account}"
        table: list[tuple[str, str, Endpoint]] = [
            ("GET", p + "/health", self.health),
            ("POST", p + "/reset", self.reset),
            ("GET", p + "/inspect", self.inspect_all),
            ("GET", p + "/events", self.events),
            ("GET", p + "/accounts", self.list_accounts),
            ("POST", p + "/accounts", self.create_account),
            ("GET", a, self.get_account),
            ("PATCH", a, self.patch_account),
            ("DELETE", a, self.delete_account),
            ("PUT", a + "/rate-limit", self.put_rate_limit),
            ("GET", a + "/faults", self.get_faults),
            ("PUT", a + "/faults", self.put_faults),
            ("DELETE", a + "/faults", self.clear_faults),
            ("POST", a + "/storm", self.storm),
            ("POST", a + "/leads/{id}/advance", self.advance_lead),
            ("POST", a + "/jobs/{id}/advance", self.advance_job),
            ("POST", a + "/invoices/{id}/pay", self.pay_invoice),
            ("GET", a + "/inspect", self.inspect),
            *office_routes(self.office, parse_office, p),
        ]
        return route_table(table)
