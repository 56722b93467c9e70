"""Per-tenant fault injection: seeded, reproducible decisions for each request the faults apply to."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import AppliesTo, FaultConfig

FaultKind = Literal["none", "error", "timeout", "commit_then_fail"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FAULT_LOG_LIMIT = 10_000


@dataclass(frozen=True)
class FaultDecision:
    kind: FaultKind
    latency_s: float = 0.0
    status: int | None = None  # error / commit_then_fail (mode "status") / not-committed timeout


NO_FAULT = FaultDecision("none")


def applies(applies_to: AppliesTo, method: str) -> bool:
    return applies_to == "all" or method.upper() in WRITE_METHODS


@dataclass
class TenantFaults:
    config: FaultConfig = field(default_factory=FaultConfig)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    storm_until: float = 0.0
    storm_retry_after: int = 0
    storm_applies_to: AppliesTo = "all"

    def configure(self, config: FaultConfig) -> None:
        """New configuration; the RNG restarts from `config.seed`, so the same traffic sees the same faults."""
        self.config = config
        self.rng = random.Random(config.seed)
        self.seq = 0
        self.log.clear()

    def clear(self) -> None:
        self.configure(FaultConfig())
        self.counts.clear()
        self.storm_until = 0.0

    # -- 429 storms ------------------------------------------------------------------------------
    def start_storm(self, seconds: float, retry_after: int | None, applies_to: AppliesTo) -> None:
        self.storm_until = time.monotonic() + seconds
        self.storm_retry_after = retry_after if retry_after is not None else max(1, math.ceil(seconds))
        self.storm_applies_to = applies_to

    def storm_answer(self, method: str) -> int | None:
        """Retry-After seconds if a storm is raging for this request, else None."""
        if self.storm_until and time.monotonic() < self.storm_until and applies(self.storm_applies_to, method):
            return self.storm_retry_after
        return None

    # -- per-request decision --------------------------------------------------------------------
    def decide(self, method: str, route: str) -> FaultDecision:
        cfg = self.config
        if not cfg.active or not applies(cfg.applies_to, method):
            return NO_FAULT
        self.seq += 1
        latency_ms = 0.0
        lat = cfg.latency
        if lat.kind == "fixed":
            latency_ms = lat.ms
        elif lat.kind == "uniform":
            latency_ms = self.rng.uniform(lat.min_ms, lat.max_ms)
        elif lat.kind == "normal":
            latency_ms = max(0.0, self.rng.gauss(lat.mean_ms, lat.stddev_ms))
        kind: FaultKind = "none"
        status: int | None = None
        if cfg.error_rate or cfg.timeout_rate or cfg.commit_then_fail_rate:
            u = self.rng.random()
            if u < cfg.error_rate:
                kind = "error"
                statuses = cfg.error_statuses
                status = statuses[0] if len(statuses) == 1 else self.rng.choice(statuses)
            elif u < cfg.error_rate + cfg.timeout_rate:
                kind = "timeout"
                status = None if cfg.timeout_commits else 504
            elif u < cfg.error_rate + cfg.timeout_rate + cfg.commit_then_fail_rate:
                kind = "commit_then_fail"
                status = None if cfg.commit_then_fail_mode == "drop" else cfg.commit_then_fail_status
        if latency_ms > 0:
            self.counts["latency"] += 1
        if kind != "none":
            self.counts[kind] += 1
            if len(self.log) < FAULT_LOG_LIMIT:
                entry: dict[str, Any] = {"seq": self.seq, "route": route, "fault": kind}
                if kind == "commit_then_fail":
                    entry["mode"] = cfg.commit_then_fail_mode
                if status is not None:
                    entry["status"] = status
                self.log.append(entry)
        return FaultDecision(kind, latency_ms / 1000.0, status)
