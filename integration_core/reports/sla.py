"""SLA over a day's delivery report: which companies were too slow or failed too often (docs/reports.md)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

__all__ = ["Offender", "SlaVerdict", "failure_rate_verdict", "latency_verdict"]

Severity = Literal["WARN", "ERROR"]


@dataclass(frozen=True)
class Offender:
    company_id: uuid.UUID
    company_name: str
    partition_key: str
    provider: str
    value: float  # the p95 in seconds, or the failure rate
    severity: Severity


@dataclass(frozen=True)
class SlaVerdict:
    threshold: float
    error_threshold: float
    offenders: list[Offender] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.offenders

    @property
    def severity(self) -> Severity:
        """ERROR when any offender is over the error threshold (the threshold x SLA_ERROR_FACTOR), else WARN."""
        return "ERROR" if any(o.severity == "ERROR" for o in self.offenders) else "WARN"


def _verdict(df: pd.DataFrame, column: str, threshold: float, error_factor: float) -> SlaVerdict:
    error_threshold = threshold * error_factor
    offenders: list[Offender] = []
    if not df.empty:
        values = pd.to_numeric(df[column], errors="coerce")
        over = df[values > threshold].assign(_v=values[values > threshold])
        for row in over.sort_values("_v", ascending=False).to_dict("records"):
            value = float(row["_v"])
            offenders.append(
                Offender(
                    company_id=row["receiving_company_id"],
                    company_name=str(row["company_name"]),
                    partition_key=str(row["partition_key"]),
                    provider=str(row["provider"]),
                    value=value,
                    severity="ERROR" if value > error_threshold else "WARN",
                )
            )
    return SlaVerdict(threshold=threshold, error_threshold=error_threshold, offenders=offenders)


def latency_verdict(df: pd.DataFrame, sla_seconds: float, error_factor: float) -> SlaVerdict:
    """Companies whose routed → synced p95 exceeds DELIVERY_SLA_SECONDS (ERROR beyond `error_factor` times it)."""
    return _verdict(df, "routed_to_synced_p95_s", sla_seconds, error_factor)


def failure_rate_verdict(df: pd.DataFrame, threshold: float, error_factor: float) -> SlaVerdict:
    """Companies whose failure rate (failed / finished) exceeds the threshold (ERROR beyond `error_factor` times
    it, capped at 100%)."""
    verdict = _verdict(df, "failure_rate", threshold, error_factor)
    return verdict
