"""In-memory state of the Housecall Pro sandbox: accounts (companies) with their API keys, records, limits,
faults and counters, and the event hook.

Concurrency: the sandbox runs on one event loop (uvicorn). Every mutation below is synchronous (no `await`
between reading and writing a record), so requests never interleave inside one.

Events: every time a record moves (lead created/converted/lost, job created/scheduled/started/completed/
canceled, invoice created/paid, customer created) the sandbox calls `on_event(kind, payload)` on each listener
in `Sandbox.listeners`, synchronously, after the change is applied. See `EventListener`.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from integration_core.local.demo import DEMO_HCP_ACCOUNTS, DemoHcpAccount
from sandboxes.common.state import Clock, RequestStats
from sandboxes.common.state import TransitionError as TransitionError
from sandboxes.servicetitan.faults import FAULT_LOG_LIMIT, FaultDecision, TenantFaults, applies
from sandboxes.servicetitan.ratelimit import TokenBucket

from .config import HcpConfig, HcpFaultConfig, OfficeConfig, RetryAfterMode

log = logging.getLogger(__name__)

LEAD_STATUSES = ("open", "won", "lost")
# Job.work_status values (the definition's enum) and the `work_status` filter's names for them.
WORK_STATUSES = (
    "needs scheduling",
    "scheduled",
    "in progress",
    "complete rated",
    "complete unrated",
    "user canceled",
    "pro canceled",
)
WORK_STATUS_FILTER: dict[str, frozenset[str]] = {
    "unscheduled": frozenset({"needs scheduling"}),
    "scheduled": frozenset({"scheduled"}),
    "in_progress": frozenset({"in progress"}),
    "completed": frozenset({"complete rated", "complete unrated"}),
    "canceled": frozenset({"user canceled", "pro canceled"}),
}
JOB_CHAIN = ("needs scheduling", "scheduled", "in progress", "complete unrated")
TERMINAL_WORK_STATUSES = frozenset({"complete rated", "complete unrated", "user canceled", "pro canceled"})
INVOICE_STATUSES = ("open", "pending_payment", "paid", "voided", "uncollectible", "canceled")
EVENT_LOG_LIMIT = 10_000
# What inspection groups records by when no pattern is given: a UUID anywhere in tags, lead source or notes.
DEFAULT_MARKER_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class EventListener(Protocol):
    """Anything with `on_event(kind, payload)`. Called synchronously on the sandbox's event loop right after the
    change is applied; it must return quickly (queue the work, e.g. a webhook delivery) and should not raise
    (an exception is logged and ignored: it never undoes or fails the write).

    `kind`: "customer.created", "lead.created", "lead.converted", "lead.lost", "job.created", "job.scheduled",
    "job.started", "job.completed", "job.canceled", "invoice.created", "invoice.paid".
    `payload`: {"id": "evt_…", "event": kind, "occurred_at": ISO-8601, "company_id": "…", and the record as the
    API shows it under "customer" / "lead" / "job" / "invoice" (a converted lead also carries "job_id")}.
    """

    def on_event(self, kind: str, payload: dict[str, Any]) -> None: ...


def fmt_dt(dt: datetime) -> str:
    """ISO-8601 UTC with microseconds: 2026-03-23T15:30:00.123456Z."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fmt_opt(dt: datetime | None) -> str | None:
    return fmt_dt(dt) if dt is not None else None


def parse_dt(text: str) -> datetime | None:
    """An ISO-8601 date or date-time (naive = UTC), or None."""
    raw = text.strip()
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


class Ids:
    """Housecall Pro-style ids (`cus_<32 hex>`, `job_…`), drawn from a seeded RNG: the same traffic against a
    sandbox started with the same seed gets the same ids."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"hcp-ids-{seed}")

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self._rng.getrandbits(128):032x}"


class HcpFaults(TenantFaults):
    """The ServiceTitan sandbox's seeded per-account faults, plus drops before commit (`HcpFaultConfig.drop_rate`)."""

    def drops(self, method: str, route: str, decision: FaultDecision) -> bool:
        """Whether to cut this request's connection before handling it. Drawn from the same seeded RNG only for
        requests the other faults left alone, with the odds that make `drop_rate` the overall share."""
        cfg = self.config
        if decision.kind != "none" or not isinstance(cfg, HcpFaultConfig) or cfg.drop_rate <= 0:
            return False
        if not applies(cfg.applies_to, method):
            return False
        others = cfg.error_rate + cfg.timeout_rate + cfg.commit_then_fail_rate
        if others >= 1.0 or self.rng.random() * (1.0 - others) >= cfg.drop_rate:
            return False
        self.counts["drop"] += 1
        if len(self.log) < FAULT_LOG_LIMIT:
            self.log.append({"seq": self.seq, "route": route, "fault": "drop"})
        return True


# -- records -------------------------------------------------------------------------------------


@dataclass
class Address:
    id: str
    type: str
    street: str | None
    street_line_2: str | None
    city: str | None
    state: str | None
    zip: str | None
    country: str | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "street": self.street,
            "street_line_2": self.street_line_2,
            "city": self.city,
            "state": self.state,
            "zip": self.zip,
            "country": self.country,
        }

    def text(self) -> str:
        return " ".join(p for p in (self.street, self.street_line_2, self.city, self.state, self.zip) if p)


@dataclass
class Customer:
    id: str
    first_name: str | None
    last_name: str | None
    email: str | None
    mobile_number: str | None
    home_number: str | None
    work_number: str | None
    company: str | None
    notifications_enabled: bool
    lead_source: str | None
    notes: str | None
    tags: list[str]
    addresses: list[Address]
    created_at: datetime
    updated_at: datetime

    def to_json(self, account: Account) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "mobile_number": self.mobile_number,
            "home_number": self.home_number,
            "work_number": self.work_number,
            "company": self.company,
            "notifications_enabled": self.notifications_enabled,
            "lead_source": self.lead_source,
            "notes": self.notes,
            "created_at": fmt_dt(self.created_at),
            "updated_at": fmt_dt(self.updated_at),
            "company_name": account.name,
            "company_id": account.company_id,
            "tags": list(self.tags),
            "addresses": [a.to_json() for a in self.addresses],
        }

    def summary_json(self, account: Account) -> dict[str, Any]:
        """The customer as embedded in a lead."""
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "company": self.company,
            "notifications_enabled": self.notifications_enabled,
            "mobile_number": self.mobile_number,
            "home_number": self.home_number,
            "work_number": self.work_number,
            "tags": list(self.tags),
            "lead_source": self.lead_source,
        }

    def job_json(self, account: Account) -> dict[str, Any]:
        """The customer as embedded in a job (notes as a list of notes, per the definition)."""
        out = self.summary_json(account)
        out.update(
            {
                "notes": [{"id": f"{self.id}_note", "content": self.notes}] if self.notes else [],
                "created_at": fmt_dt(self.created_at),
                "updated_at": fmt_dt(self.updated_at),
                "company_name": account.name,
                "company_id": account.company_id,
            }
        )
        return out

    def address(self, address_id: str) -> Address | None:
        return next((a for a in self.addresses if a.id == address_id), None)

    def search_text(self) -> str:
        parts = [self.first_name, self.last_name, self.email, self.company]
        parts += [a.text() for a in self.addresses]
        return " ".join(p for p in parts if p).lower()

    def phones(self) -> list[str]:
        return [p for p in (self.mobile_number, self.home_number, self.work_number) if p]


@dataclass
class Lead:
    id: str
    number: int
    customer_id: str
    address_id: str | None
    lead_source: str | None
    tags: list[str]
    note: str | None
    line_items: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    status: str = "open"
    pipeline_status: str = "New"
    lost_at: datetime | None = None
    job_id: str | None = None
    estimate_id: str | None = None

    def to_json(self, account: Account) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "number": self.number}
        customer = account.customers.get(self.customer_id)
        if customer is not None:
            out["customer"] = customer.summary_json(account)
            address = customer.address(self.address_id) if self.address_id else None
            if address is not None:
                out["address"] = {
                    k: v
                    for k, v in address.to_json().items()
                    if k in ("id", "city", "state", "street", "street_line_2", "zip") and v is not None
                }
        if self.lead_source is not None:
            out["lead_source"] = self.lead_source
        out.update(
            {
                "tags": list(self.tags),
                "status": self.status,
                "pipeline_status": self.pipeline_status,
                "company_name": account.name,
                "company_id": account.company_id,
                "lost_at": fmt_opt(self.lost_at),
            }
        )
        return out


@dataclass
class Note:
    id: str
    content: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "content": self.content}


@dataclass
class Job:
    id: str
    invoice_number: str
    customer_id: str
    address_id: str
    description: str | None
    notes: list[Note]
    tags: list[str]
    lead_source: str | None
    job_type_id: str | None
    business_unit_id: str | None
    line_items: list[dict[str, Any]]
    total_amount: int  # cents
    created_at: datetime
    updated_at: datetime
    scheduled_start: datetime | None = None
    scheduled_end: datetime | None = None
    arrival_window: int = 0
    work_status: str = "needs scheduling"
    on_my_way_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    canceled_at: datetime | None = None
    deleted_at: datetime | None = None
    lead_id: str | None = None
    invoice_ids: list[str] = field(default_factory=list)

    def to_json(self, account: Account) -> dict[str, Any]:
        customer = account.customers.get(self.customer_id)
        address = customer.address(self.address_id) if customer else None
        paid = sum(account.invoices[i].amount for i in self.invoice_ids if account.invoices[i].status == "paid")
        schedule: dict[str, Any] = {"arrival_window": self.arrival_window}
        if self.scheduled_start is not None and self.scheduled_end is not None:
            schedule["scheduled_start"] = fmt_dt(self.scheduled_start)
            schedule["scheduled_end"] = fmt_dt(self.scheduled_end)
        out: dict[str, Any] = {
            "id": self.id,
            "invoice_number": self.invoice_number,
            "description": self.description or "",
            "customer": customer.job_json(account) if customer else {"id": self.customer_id},
            "address": address.to_json() if address else None,
            "notes": [n.to_json() for n in self.notes],
            "work_status": self.work_status,
            "work_timestamps": {
                "on_my_way_at": fmt_opt(self.on_my_way_at),
                "started_at": fmt_opt(self.started_at),
                "completed_at": fmt_opt(self.completed_at),
            },
            "schedule": schedule,
            "total_amount": self.total_amount,
            "outstanding_balance": max(0, self.total_amount - paid),
            "subtotal": self.total_amount,
            "assigned_employees": [],
            "tags": list(self.tags),
            "original_estimate_id": None,
            "original_estimate_uuids": [],
            "lead_source": self.lead_source,
            "job_fields": _job_fields(account, self),
            "created_at": fmt_dt(self.created_at),
            "updated_at": fmt_dt(self.updated_at),
            "canceled_at": fmt_opt(self.canceled_at),
            "deleted_at": fmt_opt(self.deleted_at),
            "company_name": account.name,
            "company_id": account.company_id,
        }
        return out


def _job_fields(account: Account, job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {}
    jt = account.job_types.get(job.job_type_id or "")
    if jt is not None:
        out["job_type"] = jt.to_json()
    bu = account.business_units.get(job.business_unit_id or "")
    if bu is not None:
        out["business_unit"] = bu.to_json()
    return out


@dataclass
class Invoice:
    id: str
    job_id: str
    customer_id: str
    invoice_number: str
    amount: int  # cents
    items: list[dict[str, Any]]
    service_date: datetime
    invoice_date: datetime
    due_at: datetime
    created_at: datetime
    updated_at: datetime
    status: str = "open"
    sent_at: datetime | None = None
    paid_at: datetime | None = None
    payments: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, *, with_job_id: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "invoice_number": self.invoice_number,
            "amount": self.amount,
            "subtotal": self.amount,
            "due_amount": 0 if self.status == "paid" else self.amount,
            "due_at": fmt_dt(self.due_at),
            "display_due_concept": "Upon receipt",
            "due_concept": "upon_receipt",
            "service_date": fmt_dt(self.service_date),
            "invoice_date": fmt_dt(self.invoice_date),
            "items": [dict(i) for i in self.items],
            "taxes": [],
            "discounts": [],
            "payments": [dict(p) for p in self.payments],
        }
        # Strings in the definition (not nullable): left out until they happen.
        if self.sent_at is not None:
            out["sent_at"] = fmt_dt(self.sent_at)
        if self.paid_at is not None:
            out["paid_at"] = fmt_dt(self.paid_at)
        if with_job_id:
            out["job_id"] = self.job_id
        return out


@dataclass
class Named:
    """Tags, lead sources, job types and business units: an id and a name."""

    id: str
    name: str
    created_at: datetime
    editable: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.editable is not None:
            out["editable"] = self.editable
        return out


# -- per-account counters ------------------------------------------------------------------------


@dataclass
class AccountStats(RequestStats):
    rate_limited_without_retry_after: int = 0


# -- accounts ------------------------------------------------------------------------------------


@dataclass
class Account:
    """A Housecall Pro company: its API keys, limits, faults and records."""

    company_id: str
    name: str
    api_keys: set[str]
    rate: float
    burst: int
    retry_after: RetryAfterMode
    ids: Ids
    clock: Clock
    seeded: bool = False
    customers: dict[str, Customer] = field(default_factory=dict)
    leads: dict[str, Lead] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    tags: dict[str, Named] = field(default_factory=dict)
    tag_ids: dict[str, str] = field(default_factory=dict)  # tag name -> id
    lead_sources: dict[str, Named] = field(default_factory=dict)
    job_types: dict[str, Named] = field(default_factory=dict)
    business_units: dict[str, Named] = field(default_factory=dict)
    estimates: dict[str, str] = field(default_factory=dict)  # estimate id -> lead id
    webhook_subscribed: bool = False
    bucket: TokenBucket | None = None
    faults: HcpFaults = field(default_factory=HcpFaults)
    storm_header: bool = True
    throttle_rng: random.Random = field(default_factory=lambda: random.Random(0))
    stats: AccountStats = field(default_factory=AccountStats)
    next_lead_number: int = 1
    next_invoice_number: int = 1001

    # -- identity / limits -----------------------------------------------------------------------
    def describe(self, *, with_keys: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "company_id": self.company_id,
            "name": self.name,
            "rate_limit": {"rate": self.rate, "burst": self.burst, "retry_after": self.retry_after},
            "faults": self.faults.config.to_json(),
            "webhook_subscribed": self.webhook_subscribed,
            "job_type_ids": sorted(self.job_types),
            "lead_source_names": sorted(s.name for s in self.lead_sources.values()),
            "seeded": self.seeded,
        }
        if with_keys:
            out["api_keys"] = sorted(self.api_keys)
        return out

    def take(self) -> tuple[bool, int]:
        if self.bucket is None:
            self.bucket = TokenBucket(self.rate, self.burst)
        return self.bucket.try_take()

    def set_rate_limit(self, rate: float, burst: int, retry_after: RetryAfterMode | None = None) -> None:
        self.rate, self.burst = rate, burst
        if retry_after is not None:
            self.retry_after = retry_after
        if self.bucket is not None:
            self.bucket.reconfigure(rate, burst)

    def throttle_header(self) -> bool:
        """Whether this throttled answer carries Retry-After (per the account's mode; `sometimes` is seeded)."""
        if self.retry_after == "always":
            return True
        if self.retry_after == "never":
            return False
        return self.throttle_rng.random() < 0.5

    # -- lookups ---------------------------------------------------------------------------------
    def tag_named(self, name: str, now: datetime) -> Named:
        """The company's tag of that name, created on first use (records carry tags by name)."""
        tag_id = self.tag_ids.get(name)
        if tag_id is not None and tag_id in self.tags:
            return self.tags[tag_id]
        tag = Named(self.ids.new("tag"), name, now)
        self.tags[tag.id] = tag
        self.tag_ids[name] = tag.id
        return tag

    def note_tags(self, names: Iterable[str], now: datetime) -> list[str]:
        out: list[str] = []
        for name in names:
            if name not in out:
                self.tag_named(name, now)
                out.append(name)
        return out

    def lead_source_named(self, name: str, now: datetime) -> Named:
        for source in self.lead_sources.values():
            if source.name == name:
                return source
        source = Named(self.ids.new("ls"), name, now, editable=True)
        self.lead_sources[source.id] = source
        return source

    def clear_records(self) -> None:
        for store in (self.customers, self.leads, self.jobs, self.invoices, self.estimates):
            store.clear()
        self.webhook_subscribed = False
        self.next_lead_number, self.next_invoice_number = 1, 1001

    # -- markers / inspection --------------------------------------------------------------------
    def markers(self, pattern: str = DEFAULT_MARKER_PATTERN) -> dict[str, dict[str, dict[str, int]]]:
        """For each kind of record: marker → {where found ("tags"/"lead_source"/"notes"): n}. A record counts once
        per marker and place; `n > 1` in any place means duplicates."""
        regex = re.compile(pattern)

        def found(texts: Iterable[str | None]) -> set[str]:
            out: set[str] = set()
            for text in texts:
                if text:
                    out.update(m.group(1) if m.groups() else m.group(0) for m in regex.finditer(text))
            return out

        out: dict[str, dict[str, dict[str, int]]] = {}
        kinds: list[tuple[str, Iterable[tuple[list[str], str | None, list[str | None]]]]] = [
            ("leads", ((ld.tags, ld.lead_source, [ld.note]) for ld in self.leads.values())),
            (
                "jobs",
                ((j.tags, j.lead_source, [*(n.content for n in j.notes), j.description]) for j in self.jobs.values()),
            ),
            ("customers", ((c.tags, c.lead_source, [c.notes]) for c in self.customers.values())),
        ]
        for kind, records in kinds:
            counts: dict[str, Counter[str]] = {}
            for tags, source, notes in records:
                for place, markers in (
                    ("tags", found(tags)),
                    ("lead_source", found([source])),
                    ("notes", found(notes)),
                ):
                    for marker in markers:
                        counts.setdefault(marker, Counter())[place] += 1
            out[kind] = {m: dict(c) for m, c in sorted(counts.items())}
        return out

    def inspect(self, *, pattern: str = DEFAULT_MARKER_PATTERN, with_timestamps: bool = False) -> dict[str, Any]:
        markers = self.markers(pattern)
        requests = {route: dict(statuses) for route, statuses in sorted(self.stats.requests.items())}
        by_status: Counter[str] = Counter()
        for statuses in self.stats.requests.values():
            by_status.update(statuses)
        duplicates = {
            kind: {m: places for m, places in found.items() if max(places.values()) > 1}
            for kind, found in markers.items()
        }
        out: dict[str, Any] = {
            "company_id": self.company_id,
            "requests": requests,
            "requests_by_status": dict(sorted(by_status.items())),
            "requests_total": sum(by_status.values()),
            "rate_limited": self.stats.rate_limited,
            "rate_limited_without_retry_after": self.stats.rate_limited_without_retry_after,
            "accepted_requests": len(self.stats.accepted),
            "max_requests_in_any_1s_window": self.stats.max_in_window(1.0),
            "rate_limit": {"rate": self.rate, "burst": self.burst, "retry_after": self.retry_after},
            "faults": {
                "config": self.faults.config.to_json(),
                "counts": dict(self.faults.counts),
                "applicable_requests": self.faults.seq,
                "log": list(self.faults.log),
                "storm_active": self.faults.storm_until > time.monotonic(),
            },
            "records": {
                "customers": len(self.customers),
                "addresses": sum(len(c.addresses) for c in self.customers.values()),
                "leads": len(self.leads),
                "jobs": len(self.jobs),
                "invoices": len(self.invoices),
            },
            "leads_by_status": dict(Counter(ld.status for ld in self.leads.values())),
            "jobs_by_status": dict(Counter(j.work_status for j in self.jobs.values())),
            "invoices_by_status": dict(Counter(i.status for i in self.invoices.values())),
            "webhook_subscribed": self.webhook_subscribed,
            "marker_pattern": pattern,
            "markers": markers,
            "duplicates": duplicates,
        }
        if with_timestamps:
            first = self.stats.accepted[0] if self.stats.accepted else 0.0
            out["accepted_timestamps"] = [round(t - first, 6) for t in self.stats.accepted]
        return out


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# -- the whole sandbox ---------------------------------------------------------------------------


class Sandbox:
    """All accounts, the event listeners and process-wide settings; one instance per app.

    Record changes go through the methods below (API handlers, the control API and the office alike), so each
    change emits its event exactly once.
    """

    def __init__(self, config: HcpConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.ids = Ids(config.seed)
        self.accounts: dict[str, Account] = {}
        self.office = OfficeConfig(**config.office.to_json())
        self.unattributed: Counter[str] = Counter()
        self.listeners: list[EventListener] = []
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENT_LOG_LIMIT)
        self.events_emitted = 0
        self.started_at = time.time()
        if config.seed_demo_accounts:
            for demo in DEMO_HCP_ACCOUNTS:
                self._seed_demo(demo)

    # -- events ----------------------------------------------------------------------------------
    def add_listener(self, listener: EventListener) -> EventListener:
        self.listeners.append(listener)
        return listener

    def remove_listener(self, listener: EventListener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def emit(self, account: Account, kind: str, record_key: str, record: dict[str, Any], **extra: Any) -> None:
        now = self.clock.now()
        payload: dict[str, Any] = {
            "id": self.ids.new("evt"),
            "event": kind,
            "occurred_at": fmt_dt(now),
            "company_id": account.company_id,
            record_key: record,
            **extra,
        }
        self.events_emitted += 1
        self.events.append(
            {
                "id": payload["id"],
                "event": kind,
                "company_id": account.company_id,
                "record_id": record.get("id"),
                "occurred_at": payload["occurred_at"],
            }
        )
        for listener in list(self.listeners):
            try:
                listener.on_event(kind, payload)
            except Exception:  # a listener never fails the write; the payload holds homeowner data: not logged
                log.exception("sandbox event listener failed on %s", kind)

    # -- accounts --------------------------------------------------------------------------------
    def account(self, company_id: str) -> Account | None:
        return self.accounts.get(company_id)

    def account_by_key(self, api_key: str) -> Account | None:
        import hmac

        found = None
        for account in self.accounts.values():
            for key in account.api_keys:
                if hmac.compare_digest(key.encode(), api_key.encode()):
                    found = account
        return found

    def _seed_demo(self, demo: DemoHcpAccount) -> Account:
        return self.create_account(company_id=demo.company_id, name=demo.name, api_keys=[demo.api_key], seeded=True)

    def create_account(
        self,
        *,
        company_id: str | None = None,
        name: str | None = None,
        api_keys: list[str] | None = None,
        rate: float | None = None,
        burst: int | None = None,
        retry_after: RetryAfterMode | None = None,
        seeded: bool = False,
    ) -> Account:
        company_id = company_id or self.ids.new("cmp")
        if company_id in self.accounts:
            raise ValueError(f"account {company_id} already exists")
        keys = api_keys or [f"hcpk_{self.ids.new('key')[4:]}"]
        for key in keys:
            if self.account_by_key(key) is not None:
                raise ValueError("api key already used by another account")
        n = len(self.accounts)
        account = Account(
            company_id=company_id,
            name=name or f"Sandbox company {n + 1}",
            api_keys=set(keys),
            rate=rate if rate is not None else self.config.rate,
            burst=burst if burst is not None else self.config.burst,
            retry_after=retry_after or self.config.retry_after,
            ids=self.ids,
            clock=self.clock,
            seeded=seeded,
            throttle_rng=random.Random(f"hcp-throttle-{self.config.seed}-{company_id}"),
        )
        self._seed_lookups(account)
        account.faults.configure(account.faults.config)
        self.accounts[company_id] = account
        return account

    def _seed_lookups(self, account: Account) -> None:
        now = self.clock.now()
        for name in ("Service call", "Installation", "Repair"):
            jt = Named(self.ids.new("jbt"), name, now)
            account.job_types[jt.id] = jt
        bu = Named(self.ids.new("bu"), "Service", now)
        account.business_units[bu.id] = bu
        for name in ("Google", "Referral", "TradeEngage"):
            account.lead_source_named(name, now).editable = name != "Google"

    def delete_account(self, company_id: str) -> bool:
        return self.accounts.pop(company_id, None) is not None

    def reset(self) -> None:
        """Clear records, counters, faults and limits; drop runtime accounts; keep seeded ones (and their keys)."""
        for company_id in [c for c, a in self.accounts.items() if not a.seeded]:
            del self.accounts[company_id]
        for account in self.accounts.values():
            account.clear_records()
            account.tags.clear()
            account.tag_ids.clear()
            account.lead_sources.clear()
            account.job_types.clear()
            account.business_units.clear()
            self._seed_lookups(account)
            account.stats = AccountStats()
            account.faults.clear()
            account.storm_header = True
            account.bucket = None
            account.rate, account.burst, account.retry_after = (
                self.config.rate,
                self.config.burst,
                self.config.retry_after,
            )
        self.unattributed.clear()
        self.events.clear()
        self.events_emitted = 0
        self.office = OfficeConfig(**self.config.office.to_json())

    def office_accounts(self) -> list[Account]:
        wanted = self.office.accounts
        return [a for cid, a in sorted(self.accounts.items()) if wanted is None or cid in wanted]

    # -- customers -------------------------------------------------------------------------------
    def new_address(self, body: dict[str, Any], *, type_: str = "service") -> Address:
        now = self.clock.now()
        return Address(
            id=self.ids.new("adr"),
            type=str(body.get("type") or type_),
            street=_clean(body.get("street")),
            street_line_2=_clean(body.get("street_line_2")),
            city=_clean(body.get("city")),
            state=_clean(body.get("state")),
            zip=_clean(body.get("zip")),
            country=_clean(body.get("country")) or "US",
            created_at=now,
            updated_at=now,
        )

    def create_customer(self, account: Account, body: dict[str, Any]) -> Customer:
        now = self.clock.now()
        customer = Customer(
            id=self.ids.new("cus"),
            first_name=_clean(body.get("first_name")),
            last_name=_clean(body.get("last_name")),
            email=_clean(body.get("email")),
            mobile_number=_clean(body.get("mobile_number")),
            home_number=_clean(body.get("home_number")),
            work_number=_clean(body.get("work_number")),
            company=_clean(body.get("company")),
            notifications_enabled=bool(body.get("notifications_enabled", True)),
            lead_source=_clean(body.get("lead_source")),
            notes=_clean(body.get("notes")),
            tags=account.note_tags((str(t) for t in body.get("tags") or []), now),
            addresses=[self.new_address(a) for a in body.get("addresses") or []],
            created_at=now,
            updated_at=now,
        )
        if customer.lead_source:
            account.lead_source_named(customer.lead_source, now)
        account.customers[customer.id] = customer
        self.emit(account, "customer.created", "customer", customer.to_json(account))
        return customer

    def add_address(self, account: Account, customer: Customer, body: dict[str, Any]) -> Address:
        address = self.new_address(body)
        customer.addresses.append(address)
        customer.updated_at = address.created_at
        return address

    # -- leads -----------------------------------------------------------------------------------
    def create_lead(self, account: Account, customer: Customer, address: Address | None, body: dict[str, Any]) -> Lead:
        now = self.clock.now()
        source = _clean(body.get("lead_source"))
        if source:
            account.lead_source_named(source, now)
        lead = Lead(
            id=self.ids.new("lead"),
            number=account.next_lead_number,
            customer_id=customer.id,
            address_id=address.id if address else None,
            lead_source=source,
            tags=account.note_tags((str(t) for t in body.get("tags") or []), now),
            note=_clean(body.get("note")),
            line_items=[dict(i) for i in body.get("line_items") or []],
            created_at=now,
            updated_at=now,
        )
        account.next_lead_number += 1
        account.leads[lead.id] = lead
        self.emit(account, "lead.created", "lead", lead.to_json(account))
        return lead

    def convert_lead(self, account: Account, lead: Lead, to: str = "job") -> str:
        """Convert an open lead (won): a job (needs scheduling) carrying the lead's customer, address, tags, lead
        source, note and line items — or an estimate. Returns the new record's id."""
        if lead.status != "open":
            raise TransitionError(f"lead {lead.id} is {lead.status}; only an open lead can be converted")
        customer = account.customers[lead.customer_id]
        now = self.clock.now()
        if to == "estimate":
            lead.estimate_id = self.ids.new("est")
            account.estimates[lead.estimate_id] = lead.id
            new_id = lead.estimate_id
        else:
            address = customer.address(lead.address_id) if lead.address_id else None
            if address is None:
                address = customer.addresses[0] if customer.addresses else self.add_address(account, customer, {})
            job = self.create_job(
                account,
                customer,
                address,
                {
                    "tags": list(lead.tags),
                    "lead_source": lead.lead_source,
                    "notes": lead.note,
                    "line_items": [
                        {
                            "name": str(i.get("name") or "Item"),
                            "unit_price": i.get("unit_price", 0),
                            "quantity": i.get("quantity", 1),
                        }
                        for i in lead.line_items
                    ],
                },
                lead_id=lead.id,
            )
            lead.job_id = new_id = job.id
        lead.status, lead.pipeline_status, lead.updated_at = "won", "Won", now
        extra = {"job_id": lead.job_id} if lead.job_id else {"estimate_id": lead.estimate_id}
        self.emit(account, "lead.converted", "lead", lead.to_json(account), **extra)
        return new_id

    def lose_lead(self, account: Account, lead: Lead) -> Lead:
        if lead.status != "open":
            raise TransitionError(f"lead {lead.id} is {lead.status}; only an open lead can be lost")
        now = self.clock.now()
        lead.status, lead.pipeline_status, lead.lost_at, lead.updated_at = "lost", "Lost", now, now
        self.emit(account, "lead.lost", "lead", lead.to_json(account))
        return lead

    # -- jobs ------------------------------------------------------------------------------------
    def create_job(
        self,
        account: Account,
        customer: Customer,
        address: Address,
        body: dict[str, Any],
        *,
        lead_id: str | None = None,
    ) -> Job:
        now = self.clock.now()
        items = [dict(i) for i in body.get("line_items") or []]
        total = sum(round(float(i.get("unit_price") or 0) * float(i.get("quantity") or 1)) for i in items)
        number = body.get("invoice_number")
        if number is None:
            number = account.next_invoice_number
            account.next_invoice_number += 1
        source = _clean(body.get("lead_source"))
        if source:
            account.lead_source_named(source, now)
        fields = body.get("job_fields") or {}
        notes = _clean(body.get("notes"))
        job = Job(
            id=self.ids.new("job"),
            invoice_number=str(int(number)) if isinstance(number, int | float) else str(number),
            customer_id=customer.id,
            address_id=address.id,
            description=_clean(body.get("description")),
            notes=[Note(self.ids.new("nte"), notes)] if notes else [],
            tags=account.note_tags((str(t) for t in body.get("tags") or []), now),
            lead_source=source,
            job_type_id=fields.get("job_type_id"),
            business_unit_id=fields.get("business_unit_id"),
            line_items=items,
            total_amount=int(total),
            created_at=now,
            updated_at=now,
            lead_id=lead_id,
        )
        account.jobs[job.id] = job
        schedule = body.get("schedule") or {}
        start = parse_dt(str(schedule["scheduled_start"])) if schedule.get("scheduled_start") else None
        end = parse_dt(str(schedule["scheduled_end"])) if schedule.get("scheduled_end") else None
        self.emit(account, "job.created", "job", job.to_json(account))
        if start is not None:
            self.schedule_job(account, job, start, end or start + timedelta(hours=2), schedule.get("arrival_window"))
        return job

    def schedule_job(
        self, account: Account, job: Job, start: datetime, end: datetime, arrival_window: Any = None
    ) -> Job:
        if job.work_status not in ("needs scheduling", "scheduled"):
            raise TransitionError(f"job {job.id} is {job.work_status}; it cannot be scheduled")
        job.scheduled_start, job.scheduled_end = start, end
        if isinstance(arrival_window, int) and not isinstance(arrival_window, bool):
            job.arrival_window = arrival_window
        job.work_status, job.updated_at = "scheduled", self.clock.now()
        self.emit(account, "job.scheduled", "job", job.to_json(account))
        return job

    def start_job(self, account: Account, job: Job) -> Job:
        if job.work_status != "scheduled":
            raise TransitionError(f"job {job.id} is {job.work_status}; only a scheduled job can start")
        now = self.clock.now()
        job.on_my_way_at = job.on_my_way_at or now
        job.started_at, job.work_status, job.updated_at = now, "in progress", now
        self.emit(account, "job.started", "job", job.to_json(account))
        return job

    def complete_job(self, account: Account, job: Job, total_cents: int | None = None) -> Invoice:
        """Complete an in-progress job and create its invoice (open) for `total_cents` (default: the job's total)."""
        if job.work_status != "in progress":
            raise TransitionError(f"job {job.id} is {job.work_status}; only a job in progress can be completed")
        now = self.clock.now()
        if total_cents is not None:
            job.total_amount = total_cents
            job.line_items = [{"name": "Service", "unit_price": total_cents, "quantity": 1}]
        job.completed_at, job.work_status, job.updated_at = now, "complete unrated", now
        self.emit(account, "job.completed", "job", job.to_json(account))
        return self.create_invoice(account, job)

    def cancel_job(self, account: Account, job: Job, *, by: str = "pro") -> Job:
        if job.work_status in TERMINAL_WORK_STATUSES:
            raise TransitionError(f"job {job.id} is {job.work_status}; it cannot be canceled")
        now = self.clock.now()
        if by == "user":
            job.work_status, job.canceled_at = "user canceled", now
        else:
            job.work_status, job.deleted_at = "pro canceled", now
        job.updated_at = now
        self.emit(account, "job.canceled", "job", job.to_json(account))
        return job

    # -- invoices --------------------------------------------------------------------------------
    def create_invoice(self, account: Account, job: Job) -> Invoice:
        now = self.clock.now()
        items = [
            {
                "id": self.ids.new("li"),
                "name": str(i.get("name") or "Service"),
                "unit_cost": 0,
                "unit_price": round(float(i.get("unit_price") or 0)),
                "qty_in_hundredths": round(float(i.get("quantity") or 1) * 100),
                "amount": round(float(i.get("unit_price") or 0) * float(i.get("quantity") or 1)),
                "invoiced_amount": round(float(i.get("unit_price") or 0) * float(i.get("quantity") or 1)),
                "description": str(i.get("description") or ""),
                "type": "labor",
            }
            for i in job.line_items
        ]
        invoice = Invoice(
            id=self.ids.new("invoice"),
            job_id=job.id,
            customer_id=job.customer_id,
            invoice_number=job.invoice_number
            if not job.invoice_ids
            else f"{job.invoice_number}-{len(job.invoice_ids) + 1}",
            amount=job.total_amount,
            items=items,
            service_date=job.completed_at or now,
            invoice_date=now,
            due_at=now,
            created_at=now,
            updated_at=now,
            sent_at=now,
        )
        account.invoices[invoice.id] = invoice
        job.invoice_ids.append(invoice.id)
        self.emit(account, "invoice.created", "invoice", invoice.to_json(with_job_id=True))
        return invoice

    def pay_invoice(self, account: Account, invoice: Invoice, method: str = "credit_card") -> Invoice:
        if invoice.status not in ("open", "pending_payment"):
            raise TransitionError(f"invoice {invoice.id} is {invoice.status}; it cannot be paid")
        now = self.clock.now()
        invoice.payments.append(
            {
                "id": self.ids.new("pmt"),
                "status": "succeeded",
                "payment_method": method,
                "amount": invoice.amount,
                "note": "",
                "paid_at": fmt_dt(now),
                "category": "payment",
            }
        )
        invoice.status, invoice.paid_at, invoice.updated_at = "paid", now, now
        job = account.jobs.get(invoice.job_id)
        if job is not None:
            job.updated_at = now
        self.emit(account, "invoice.paid", "invoice", invoice.to_json(with_job_id=True))
        return invoice
