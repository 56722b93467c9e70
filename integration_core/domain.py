"""The service's vocabularies (states, levels, modes). No dependencies: the CLI and the models share them."""

from __future__ import annotations

import enum


class SkillLevel(enum.StrEnum):
    basic = "basic"
    intermediate = "intermediate"
    expert = "expert"

    @property
    def rank(self) -> int:
        return {"basic": 1, "intermediate": 2, "expert": 3}[self.value]


class JobStatus(enum.StrEnum):
    routed = "routed"  # at least one routing exists
    unmatched = "unmatched"  # stored, no company matched yet (`si jobs rematch` retries)
    completed = "completed"  # a routed job was completed at the provider
    canceled = "canceled"  # every routed job was canceled at the provider


class RoutingStatus(enum.StrEnum):
    pending = "pending"
    claimed = "claimed"
    needs_reconcile = "needs_reconcile"
    synced = "synced"
    failed = "failed"
    no_integration = "no_integration"


# Waiting for its next attempt — a delivery (`pending`) or a lookup (`needs_reconcile`): what a delivery run claims
# once next_attempt_at has come ("due"), and what "oldest pending" ages (delivery/monitoring.py).
DUE_ROUTING_STATUSES = (RoutingStatus.pending, RoutingStatus.needs_reconcile)


class DeliveryMode(enum.StrEnum):
    booking = "booking"  # ServiceTitan: a booking the office converts
    job = "job"  # a job at the provider (customer and address found or created first)
    lead = "lead"  # Housecall Pro: a lead the office converts


class ProviderName(enum.StrEnum):
    """The field-service systems a connection can name (`integration_core/providers/registry.py`)."""

    servicetitan = "servicetitan"
    housecallpro = "housecallpro"


class ProviderEnvironment(enum.StrEnum):
    production = "production"
    integration = "integration"
    sandbox = "sandbox"


class ConnectionHealth(enum.StrEnum):
    unknown = "unknown"
    healthy = "healthy"
    unhealthy = "unhealthy"


class AttemptOutcome(enum.StrEnum):
    in_flight = "in_flight"  # recorded and committed before the request leaves
    synced = "synced"  # the provider created the record
    adopted = "adopted"  # an earlier attempt's record was found at the provider and adopted
    not_found = "not_found"  # lookup found nothing: safe to deliver again
    retryable = "retryable"
    rate_limited = "rate_limited"
    failed = "failed"  # permanent
    unknown = "unknown"  # the request may have reached the provider
    auth_failed = "auth_failed"
    abandoned = "abandoned"  # lease expired before the attempt finished (reconcile closes it)


class WebhookEventStatus(enum.StrEnum):
    """A stored webhook event (`webhook_events.status`, docs/webhooks.md)."""

    received = "received"  # stored, waiting to be applied
    applied = "applied"
    unmatched = "unmatched"  # no delivered routing of ours (kept, requeued when its record becomes known)
    error = "error"  # failed WEBHOOK_MAX_APPLY_ATTEMPTS times
