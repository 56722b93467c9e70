"""Configuration of the sandbox: start-up settings (`SandboxConfig`) and runtime knobs set through the control API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sandboxes.common.config import AppliesTo as AppliesTo
from sandboxes.common.config import ConfigError as ConfigError
from sandboxes.common.config import boolean as _bool
from sandboxes.common.config import choice as _choice
from sandboxes.common.config import integer as _int
from sandboxes.common.config import known as _known
from sandboxes.common.config import number as _num

LatencyKind = Literal["none", "fixed", "uniform", "normal"]
FailMode = Literal["status", "drop"]

ERROR_STATUSES = (500, 502, 503, 504)


@dataclass
class LatencyConfig:
    """Extra latency before a request is handled, in milliseconds (drawn from the tenant's seeded RNG)."""

    kind: LatencyKind = "none"
    ms: float = 0.0  # fixed
    min_ms: float = 0.0  # uniform
    max_ms: float = 0.0
    mean_ms: float = 0.0  # normal (clipped at 0)
    stddev_ms: float = 0.0


@dataclass
class FaultConfig:
    """Per-tenant fault injection; one seeded `random.Random(seed)` per tenant makes the sequence reproducible.

    For every request it applies to, one uniform draw picks at most one of: error (5xx, nothing committed),
    timeout (held `timeout_s`, committed or not per `timeout_commits`), commit-then-fail (committed, then a
    5xx or — mode `drop` — the connection is dropped mid-response). Rates must sum to <= 1.
    """

    seed: int = 0
    applies_to: AppliesTo = "writes"
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    timeout_rate: float = 0.0
    timeout_s: float = 1.0
    timeout_commits: bool = True
    commit_then_fail_rate: float = 0.0
    commit_then_fail_mode: FailMode = "status"
    commit_then_fail_status: int = 500

    @property
    def active(self) -> bool:
        return (
            self.latency.kind != "none"
            or self.error_rate > 0
            or self.timeout_rate > 0
            or self.commit_then_fail_rate > 0
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_statuses"] = list(self.error_statuses)
        return out


@dataclass
class OfficeConfig:
    """The background "office" that works bookings and jobs like a tenant's CSRs and technicians would.

    Every `pace_s` seconds each open record moves one step: a New booking is accepted (or dismissed), an
    accepted one converted into a job (or left accepted); a job goes Scheduled → Dispatched → InProgress →
    Completed (with an invoice of a plausible total), unless it is one of the few that get canceled.
    Fates are drawn from `random.Random(seed)`, in id order, so a run is reproducible.
    """

    enabled: bool = False
    pace_s: float = 1.0
    seed: int = 0
    dismiss_rate: float = 0.1
    accept_only_rate: float = 0.05
    cancel_rate: float = 0.1
    min_total: float = 150.0
    max_total: float = 2500.0
    tenants: list[str] | None = None  # None: every tenant

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SandboxConfig:
    """Start-up configuration of a sandbox instance."""

    seed: int = 0
    token_lifetime_s: float = 900.0
    rate: float = 60.0  # requests per second per (app key, tenant)
    burst: int = 60  # bucket capacity
    seed_demo_tenants: bool = True
    default_page_size: int = 50
    max_page_size: int = 5000
    office: OfficeConfig = field(default_factory=OfficeConfig)
    # Start loading the OpenAPI definitions in a background thread at start-up (the first request that
    # needs them waits for the load). Off: load on first use.
    preload_definitions: bool = True
    issuer: str = "https://auth-integration.servicetitan.io"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- parsing control-API payloads ------------------------------------------------------------------


def parse_latency(payload: Any) -> LatencyConfig:
    if payload is None:
        return LatencyConfig()
    if not isinstance(payload, dict):
        raise ConfigError("latency", "must be an object")
    _known(payload, {"kind", "ms", "min_ms", "max_ms", "mean_ms", "stddev_ms"}, "latency")
    cfg = LatencyConfig(
        kind=_choice(payload, "kind", "none", ("none", "fixed", "uniform", "normal")),  # type: ignore[arg-type]
        ms=_num(payload, "ms", 0.0),
        min_ms=_num(payload, "min_ms", 0.0),
        max_ms=_num(payload, "max_ms", 0.0),
        mean_ms=_num(payload, "mean_ms", 0.0),
        stddev_ms=_num(payload, "stddev_ms", 0.0),
    )
    if cfg.kind == "uniform" and cfg.max_ms < cfg.min_ms:
        raise ConfigError("latency.max_ms", "must be >= min_ms")
    return cfg


def parse_faults(payload: Any) -> FaultConfig:
    if not isinstance(payload, dict):
        raise ConfigError("$", "must be a JSON object")
    _known(payload, set(FaultConfig.__dataclass_fields__), "faults")
    statuses = payload.get("error_statuses", [500, 502, 503])
    if not isinstance(statuses, list) or not statuses or any(s not in ERROR_STATUSES for s in statuses):
        raise ConfigError("error_statuses", f"must be a non-empty list drawn from {list(ERROR_STATUSES)}")
    cfg = FaultConfig(
        seed=_int(payload, "seed", 0),
        applies_to=_choice(payload, "applies_to", "writes", ("writes", "all")),  # type: ignore[arg-type]
        latency=parse_latency(payload.get("latency")),
        error_rate=_num(payload, "error_rate", 0.0, hi=1.0),
        error_statuses=tuple(int(s) for s in statuses),
        timeout_rate=_num(payload, "timeout_rate", 0.0, hi=1.0),
        timeout_s=_num(payload, "timeout_s", 1.0, hi=3600.0),
        timeout_commits=_bool(payload, "timeout_commits", True),
        commit_then_fail_rate=_num(payload, "commit_then_fail_rate", 0.0, hi=1.0),
        commit_then_fail_mode=_choice(payload, "commit_then_fail_mode", "status", ("status", "drop")),  # type: ignore[arg-type]
        commit_then_fail_status=_int(payload, "commit_then_fail_status", 500),
    )
    if cfg.commit_then_fail_status not in ERROR_STATUSES:
        raise ConfigError("commit_then_fail_status", f"must be one of {list(ERROR_STATUSES)}")
    if cfg.error_rate + cfg.timeout_rate + cfg.commit_then_fail_rate > 1.0 + 1e-9:
        raise ConfigError("error_rate", "error_rate + timeout_rate + commit_then_fail_rate must be <= 1")
    return cfg


def parse_office(payload: Any, current: OfficeConfig) -> OfficeConfig:
    if not isinstance(payload, dict):
        raise ConfigError("$", "must be a JSON object")
    _known(payload, set(OfficeConfig.__dataclass_fields__), "office")
    tenants = payload.get("tenants", current.tenants)
    if tenants is not None and (not isinstance(tenants, list) or not all(isinstance(t, str | int) for t in tenants)):
        raise ConfigError("tenants", "must be null or a list of tenant ids")
    cfg = OfficeConfig(
        enabled=_bool(payload, "enabled", current.enabled),
        pace_s=_num(payload, "pace_s", current.pace_s, lo=0.01, hi=3600.0),
        seed=_int(payload, "seed", current.seed),
        dismiss_rate=_num(payload, "dismiss_rate", current.dismiss_rate, hi=1.0),
        accept_only_rate=_num(payload, "accept_only_rate", current.accept_only_rate, hi=1.0),
        cancel_rate=_num(payload, "cancel_rate", current.cancel_rate, hi=1.0),
        min_total=_num(payload, "min_total", current.min_total),
        max_total=_num(payload, "max_total", current.max_total),
        tenants=[str(t) for t in tenants] if tenants is not None else None,
    )
    if cfg.dismiss_rate + cfg.accept_only_rate > 1.0:
        raise ConfigError("dismiss_rate", "dismiss_rate + accept_only_rate must be <= 1")
    if cfg.max_total < cfg.min_total:
        raise ConfigError("max_total", "must be >= min_total")
    return cfg
