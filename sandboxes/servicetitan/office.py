"""The background "office": works each tenant's bookings and jobs forward at a configurable pace."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sandboxes.common.office import OfficeLoop

from .config import OfficeConfig
from .state import JOB_CHAIN, Sandbox, Tenant


class Office(OfficeLoop[OfficeConfig, tuple[str, Any]]):
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__()

    @property
    def config(self) -> OfficeConfig:
        return self.sandbox.office

    def _store(self, config: OfficeConfig) -> None:
        self.sandbox.office = config

    # -- one step of work ------------------------------------------------------------------------
    def tick(self) -> dict[str, int]:
        """Move every open record of the office's tenants one step (jobs first, then bookings)."""
        moved = {"bookings": 0, "jobs": 0}
        for tenant in self.sandbox.office_tenants():
            for job in sorted(tenant.jobs.values(), key=lambda j: j.id):
                if self._step_job(tenant, job.id):
                    moved["jobs"] += 1
            for booking in sorted(tenant.bookings.values(), key=lambda b: b.id):
                if self._step_booking(tenant, booking.id):
                    moved["bookings"] += 1
        self.ticks += 1
        return moved

    def _fate(self, tenant: Tenant, kind: str, record_id: int) -> tuple[str, Any]:
        cfg = self.config

        def draw(u: float) -> tuple[str, Any]:
            if kind == "booking":
                if u < cfg.dismiss_rate:
                    return ("dismiss", None)
                if u < cfg.dismiss_rate + cfg.accept_only_rate:
                    return ("accept_only", None)
                return ("convert", None)
            if u < cfg.cancel_rate:
                return ("cancel", self.rng.randrange(len(JOB_CHAIN) - 1))  # canceled while at this chain index
            return ("complete", Decimal(str(round(self.rng.uniform(cfg.min_total, cfg.max_total), 2))))

        return self._fate_for((tenant.tenant_id, kind, record_id), draw)

    def _step_booking(self, tenant: Tenant, booking_id: int) -> bool:
        booking = tenant.bookings[booking_id]
        if booking.status not in ("New", "Accepted"):
            return False
        fate, _ = self._fate(tenant, "booking", booking_id)
        if booking.status == "New":
            tenant.advance_booking(booking, "Dismissed" if fate == "dismiss" else "Accepted")
            return True
        if fate == "convert":
            tenant.advance_booking(booking, "Converted")
            return True
        return False

    def _step_job(self, tenant: Tenant, job_id: int) -> bool:
        job = tenant.jobs[job_id]
        if job.status not in JOB_CHAIN[:-1]:  # Completed, Canceled and Hold are left alone
            return False
        fate, detail = self._fate(tenant, "job", job_id)
        index = JOB_CHAIN.index(job.status)
        if fate == "cancel" and index == detail:
            tenant.advance_job(job, "Canceled")
            return True
        following = JOB_CHAIN[index + 1]
        tenant.advance_job(job, following, total=detail if following == "Completed" else None)
        return True
