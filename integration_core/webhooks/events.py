"""What a provider's webhook payload says, in our terms.

`describe` reads what the inbox stores beside the payload (event id, type, record id, time) and refuses a
payload that is not the provider's shape (HTTP 422, nothing stored). `changes` turns a stored event into the
`ExternalUpdate`s the status pull would have produced for the same fact, so both go through one write path.

Payload shapes (docs/webhooks.md; neither provider's webhook payload is in the definitions we have, so these are
our documented assumptions, and the sandboxes send exactly these):

* ServiceTitan: ``{"eventId", "eventType": "<Entity>.<Change>", "tenantId", "occurredOn", "data": <entity as the
  API returns it>}`` with entities ``Booking`` (status, jobId), ``Job`` (jobStatus, completedOn, bookingId,
  externalData) and ``Invoice`` (total, ``job.id``). The record time is the entity's ``modifiedOn``.
* Housecall Pro: ``{"id": "evt_…", "event": "job.completed" | "job.scheduled" | … | "lead.converted" |
  "lead.lost", "occurred_at", "company_id", "job": <Job> | "lead": <Lead>, "job_id"? (a converted lead)}``;
  records carry our marker in their tags (as the Housecall Pro provider writes it), money in integer cents
  (``total_amount``), record time ``updated_at``.
* generic (the old system's documented payload): ``{"provider", "event_type", "external_id", "data": {"status"?,
  "completed_at"?, "revenue"?, "kind"?, "marker"?, "event_id"?}, "timestamp"?, "signature"?}``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, cast, get_args

from integration_core.providers.base import ExternalStatus, ExternalUpdate, WorkItemKind
from integration_core.providers.housecallpro import mapping as hcp_mapping

KNOWN_STATUSES: frozenset[str] = frozenset(get_args(ExternalStatus))
ST_MARKER_KEY = "tradeengageRoutingId"  # integration_core.providers.servicetitan.mapping.MARKER_KEY

_ST_BOOKING = {"new": "new", "accepted": "accepted", "dismissed": "dismissed", "converted": "converted"}
_ST_JOB = {
    "scheduled": "scheduled",
    "dispatched": "dispatched",
    "inprogress": "in_progress",
    "working": "in_progress",
    "hold": "hold",
    "completed": "completed",
    "canceled": "canceled",
}
_HCP_LEAD_EVENTS = {"lead.converted": "converted", "lead.lost": "dismissed", "lead.deleted": "dismissed"}


class PayloadError(ValueError):
    """The payload is not the provider's shape: answered 422 with the field, nothing stored."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class EventInfo:
    event_id: str | None
    event_type: str
    external_id: str | None
    occurred_at: datetime | None


@dataclass(frozen=True)
class Change:
    """One routing change an event asks for (`apply_update`'s arguments)."""

    update: ExternalUpdate
    revenue_only: bool = False
    job_ref: str | None = None


# -- small readers ---------------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    raw = value.strip().replace("Z", "+00:00")
    # ServiceTitan writes 7 fractional digits; Python reads at most 6
    if "." in raw:
        head, _, rest = raw.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        tail = rest[len(digits) :]
        raw = f"{head}.{digits[:6]}{tail}"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _obj(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise PayloadError(key, "must be an object")
    return value


def _str(payload: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = payload.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise PayloadError(key, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(key, "must be a string or an integer")
    return str(value)[:128]


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, str | int) and str(value).strip() else None


def money(value: Any, *, cents: bool = False) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return (amount / 100 if cents else amount).quantize(Decimal("0.01"))


def _marker(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# -- describe (at ingest) ----------------------------------------------------------------------------------------


def describe(provider: str, payload: Any) -> EventInfo:
    if not isinstance(payload, dict):
        raise PayloadError("$", "must be a JSON object")
    if provider == "servicetitan":
        event_type = _str(payload, "eventType") or ""
        data = _obj(payload, "data")
        record = _id(data.get("id"))
        job = data.get("job")
        if event_type.lower().startswith("invoice.") and isinstance(job, dict):
            record = _id(job.get("id"))  # the record an event changes: an invoice's job
        return EventInfo(
            event_id=_str(payload, "eventId", required=False),
            event_type=event_type[:64],
            external_id=record,
            occurred_at=parse_time(data.get("modifiedOn")) or parse_time(payload.get("occurredOn")),
        )
    if provider == "housecallpro":
        event_type = _str(payload, "event") or ""
        entity = event_type.split(".", 1)[0]
        record = payload.get(entity)
        if not isinstance(record, dict):
            raise PayloadError(entity or "event", f"the {entity or 'event'} object is required")
        return EventInfo(
            event_id=_str(payload, "id", required=False) or _str(payload, "event_id", required=False),
            event_type=event_type[:64],
            external_id=_id(record.get("id")),
            occurred_at=parse_time(record.get("updated_at")) or parse_time(payload.get("occurred_at")),
        )
    # generic
    _str(payload, "provider")
    event_type = _str(payload, "event_type") or ""
    external_id = _str(payload, "external_id")
    data = payload.get("data", {})
    if not isinstance(data, dict):
        raise PayloadError("data", "must be an object")
    status = data.get("status")
    if status is not None and status not in KNOWN_STATUSES:
        raise PayloadError("data.status", f"must be one of {', '.join(sorted(KNOWN_STATUSES))}")
    if data.get("revenue") is not None and money(data.get("revenue")) is None:
        raise PayloadError("data.revenue", "must be a number >= 0")
    timestamp = payload.get("timestamp")
    occurred = parse_time(timestamp)
    if timestamp is not None and occurred is None:
        raise PayloadError("timestamp", "must be an ISO 8601 date-time")
    return EventInfo(
        event_id=_str(data, "event_id", required=False),
        event_type=event_type[:64],
        external_id=external_id,
        occurred_at=occurred,
    )


# -- changes (at apply) ------------------------------------------------------------------------------------------


def changes(provider: str, payload: dict[str, Any], *, received_at: datetime) -> list[Change]:
    """The routing changes the event asks for ([] when it says nothing we track)."""
    if provider == "servicetitan":
        return _servicetitan(payload, received_at)
    if provider == "housecallpro":
        return _housecallpro(payload, received_at)
    return _generic(payload, received_at)


def _servicetitan(payload: dict[str, Any], received_at: datetime) -> list[Change]:
    entity = str(payload.get("eventType", "")).split(".", 1)[0].lower()
    data = payload.get("data") or {}
    record_id = _id(data.get("id"))
    if record_id is None:
        return []
    at = parse_time(data.get("modifiedOn")) or parse_time(payload.get("occurredOn")) or received_at
    if entity == "booking":
        status = _ST_BOOKING.get(str(data.get("status", "")).strip().lower())
        if status is None:
            return []
        refs: dict[str, int | str] = {"booking_id": _int_or_str(record_id)}
        if _id(data.get("jobId")):
            refs["job_id"] = _int_or_str(str(data["jobId"]))
        update = ExternalUpdate(
            kind="booking",
            external_id=record_id,
            external_status=cast(ExternalStatus, status),
            modified_on=at,
            marker=_marker(data.get("externalId")),
            refs=refs,
        )
        return [Change(update)]
    if entity == "job":
        status = _ST_JOB.get(str(data.get("jobStatus", "")).strip().lower().replace(" ", "").replace("_", ""))
        if status is None:
            return []
        marker = None
        for item in data.get("externalData") or []:
            if isinstance(item, dict) and item.get("key") == ST_MARKER_KEY:
                marker = _marker(item.get("value"))
        refs = {"job_id": _int_or_str(record_id)}
        if data.get("jobNumber") is not None:
            refs["job_number"] = str(data["jobNumber"])
        booking_id = _id(data.get("bookingId"))
        kind: WorkItemKind = "job"
        external_id = record_id
        if marker is None and booking_id is not None:
            kind, external_id = "booking", booking_id  # converted from our booking: it speaks for the booking
            refs["booking_id"] = _int_or_str(booking_id)
        update = ExternalUpdate(
            kind=kind,
            external_id=external_id,
            external_status=cast(ExternalStatus, status),
            modified_on=at,
            marker=marker,
            completed_at=parse_time(data.get("completedOn")),
            refs=refs,
            source="job",
        )
        return [Change(update, job_ref=record_id)]
    if entity == "invoice":
        job = data.get("job") or {}
        job_id = _id(job.get("id")) if isinstance(job, dict) else None
        total = money(data.get("total"))
        if job_id is None or total is None:
            return []
        update = ExternalUpdate(
            kind="job", external_id=job_id, external_status="completed", modified_on=at, revenue=total, source="job"
        )
        return [Change(update, revenue_only=True, job_ref=job_id)]
    return []


def _housecallpro(payload: dict[str, Any], received_at: datetime) -> list[Change]:
    event = str(payload.get("event", "")).strip().lower()
    entity = event.split(".", 1)[0]
    record = payload.get(entity) or {}
    record_id = _id(record.get("id"))
    if record_id is None:
        return []
    at = parse_time(record.get("updated_at")) or parse_time(payload.get("occurred_at")) or received_at
    tags = [t for t in record.get("tags") or [] if isinstance(t, str)]
    marker = hcp_mapping.marker_from_tags(tags)
    if entity == "job":
        status = hcp_mapping.job_status(record.get("work_status"))
        if status is None:
            return []
        stamps = record.get("work_timestamps") or {}
        completed_at = parse_time(stamps.get("completed_at")) if isinstance(stamps, dict) else None
        # the job's total (integer cents) on completion; the pull sums its invoices, which says the same
        revenue = money(record.get("total_amount"), cents=True) if status == "completed" else None
        refs: dict[str, int | str] = {"job_id": record_id}
        if record.get("invoice_number"):
            refs["invoice_number"] = str(record["invoice_number"])
        update = ExternalUpdate(
            kind="job",
            external_id=record_id,
            external_status=status,
            modified_on=at,
            marker=marker,
            completed_at=completed_at if status == "completed" else None,
            revenue=revenue,
            refs=refs,
            source="job",
        )
        return [Change(update, job_ref=record_id)]
    if entity == "lead":
        lead_status = _HCP_LEAD_EVENTS.get(event)
        if lead_status is None:
            return []
        refs = {"lead_id": record_id}
        if _id(payload.get("job_id")):
            refs["job_id"] = str(payload["job_id"])
        update = ExternalUpdate(
            kind="lead",
            external_id=record_id,
            external_status=cast(ExternalStatus, lead_status),
            modified_on=at,
            marker=marker,
            refs=refs,
        )
        return [Change(update)]
    return []


def _generic(payload: dict[str, Any], received_at: datetime) -> list[Change]:
    data = payload.get("data") or {}
    external_id = _id(payload.get("external_id"))
    if external_id is None or not isinstance(data, dict):
        return []
    at = parse_time(payload.get("timestamp")) or received_at
    status = data.get("status")
    revenue = money(data.get("revenue"))
    if status not in KNOWN_STATUSES and revenue is None:
        return []
    kind: WorkItemKind = "job" if data.get("kind") == "job" else "booking"
    update = ExternalUpdate(
        kind=kind,
        external_id=external_id,
        external_status=cast(ExternalStatus, status if status in KNOWN_STATUSES else "completed"),
        modified_on=at,
        marker=_marker(data.get("marker")),
        completed_at=parse_time(data.get("completed_at")),
        revenue=revenue,
    )
    return [Change(update, revenue_only=status not in KNOWN_STATUSES, job_ref=external_id)]


def _int_or_str(value: str) -> int | str:
    return int(value) if value.isdigit() else value
