"""ServiceTitan-shaped webhook events from the sandbox's record moves (docs/webhooks.md).

``{"eventId", "eventType": "Booking.<Status>" | "Job.Updated" | "Job.Completed" | "Job.Canceled" |
"Invoice.Created" | "Invoice.Updated", "tenantId", "occurredOn", "data": <the record as the API returns it>}``,
signed and delivered by `sandboxes.common.webhooks.WebhookEmitter` to the tenant's configured URL.
"""

from __future__ import annotations

import uuid
from typing import Any

from sandboxes.common.webhooks import WebhookEmitter

from .state import Booking, Invoice, Job, Tenant, fmt_dt


class ServiceTitanWebhooks:
    """The `Sandbox.on_event` hook: one event per move, queued on the emitter (which never blocks)."""

    def __init__(self, emitter: WebhookEmitter) -> None:
        self.emitter = emitter

    def __call__(self, tenant: Tenant, kind: str, record: Any) -> None:
        if tenant.tenant_id not in self.emitter.targets:
            return
        if isinstance(record, Booking):
            event_type, data = f"Booking.{record.status}", record.to_json()
        elif isinstance(record, Job):
            change = {"Completed": "Completed", "Canceled": "Canceled"}.get(record.status, "Updated")
            event_type, data = f"Job.{change}", record.to_json(tenant.external_data_guid)
        elif isinstance(record, Invoice):
            change = "Created" if record.modified_on == record.created_on else "Updated"
            event_type, data = f"Invoice.{change}", record.to_json()
        else:
            return
        event_id = str(uuid.uuid4())
        payload = {
            "eventId": event_id,
            "eventType": event_type,
            "tenantId": int(tenant.tenant_id) if tenant.tenant_id.isdigit() else tenant.tenant_id,
            "occurredOn": fmt_dt(record.modified_on),
            "data": data,
        }
        self.emitter.emit(tenant.tenant_id, event_id, payload)
