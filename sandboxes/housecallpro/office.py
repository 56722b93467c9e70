"""The background "office": works each company's leads, jobs and invoices forward at a configurable pace."""

from __future__ import annotations

from datetime import timedelta

from sandboxes.common.office import OfficeLoop

from .config import OfficeConfig
from .state import JOB_CHAIN, Account, Sandbox


class Office(OfficeLoop[OfficeConfig, tuple[str, int]]):
    failure_message = "housecall pro sandbox office tick failed"

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__()

    @property
    def config(self) -> OfficeConfig:
        return self.sandbox.office

    def _store(self, config: OfficeConfig) -> None:
        self.sandbox.office = config

    def tick(self) -> dict[str, int]:
        """Move every open record of the office's accounts one step (invoices, then jobs, then leads), in id
        order within each account: a record moves at most one step per tick."""
        moved = {"leads": 0, "jobs": 0, "invoices": 0}
        for account in self.sandbox.office_accounts():
            for invoice_id in sorted(account.invoices):
                if self._step_invoice(account, invoice_id):
                    moved["invoices"] += 1
            for job_id in sorted(account.jobs, key=lambda j: (account.jobs[j].created_at, j)):
                if self._step_job(account, job_id):
                    moved["jobs"] += 1
            for lead_id in sorted(account.leads, key=lambda ld: (account.leads[ld].created_at, ld)):
                if self._step_lead(account, lead_id):
                    moved["leads"] += 1
        self.ticks += 1
        return moved

    def _fate(self, account: Account, kind: str, record_id: str) -> tuple[str, int]:
        cfg = self.config

        def draw(u: float) -> tuple[str, int]:
            if kind == "lead":
                return ("lost", 0) if u < cfg.lost_rate else ("convert", 0)
            if kind == "invoice":
                return ("unpaid", 0) if u < cfg.unpaid_rate else ("pay", 0)
            if u < cfg.cancel_rate:
                return ("cancel", self.rng.randrange(len(JOB_CHAIN) - 1))  # canceled while at this chain index
            return ("complete", round(self.rng.uniform(cfg.min_total, cfg.max_total) * 100))

        return self._fate_for((account.company_id, kind, record_id), draw)

    def _step_lead(self, account: Account, lead_id: str) -> bool:
        lead = account.leads[lead_id]
        if lead.status != "open":
            return False
        fate, _ = self._fate(account, "lead", lead_id)
        if fate == "lost":
            self.sandbox.lose_lead(account, lead)
        else:
            self.sandbox.convert_lead(account, lead, "job")
        return True

    def _step_job(self, account: Account, job_id: str) -> bool:
        job = account.jobs[job_id]
        if job.work_status not in JOB_CHAIN[:-1]:
            return False
        fate, detail = self._fate(account, "job", job_id)
        index = JOB_CHAIN.index(job.work_status)
        if fate == "cancel" and index == detail:
            self.sandbox.cancel_job(account, job)
        elif job.work_status == "needs scheduling":
            start = (self.sandbox.clock.now() + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
            self.sandbox.schedule_job(account, job, start, start + timedelta(hours=2), 60)
        elif job.work_status == "scheduled":
            self.sandbox.start_job(account, job)
        else:
            total = detail if fate == "complete" else None
            self.sandbox.complete_job(account, job, total if total else None)
        return True

    def _step_invoice(self, account: Account, invoice_id: str) -> bool:
        invoice = account.invoices[invoice_id]
        if invoice.status != "open":
            return False
        fate, _ = self._fate(account, "invoice", invoice_id)
        if fate == "unpaid":
            return False
        self.sandbox.pay_invoice(account, invoice)
        return True
