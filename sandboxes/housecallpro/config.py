"""Configuration of the Housecall Pro sandbox: start-up settings and the runtime knobs of the control API.

Fault injection reuses the ServiceTitan sandbox's `FaultConfig` (same payload, same seeded decisions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from sandboxes.common.config import ConfigError
from sandboxes.common.config import number as _num
from sandboxes.servicetitan.config import FaultConfig, LatencyConfig, parse_faults

RetryAfterMode = Literal["always", "sometimes", "never"]
RETRY_AFTER_MODES: tuple[str, ...] = ("always", "sometimes", "never")

__all__ = [
    "ConfigError",
    "FaultConfig",
    "HcpConfig",
    "HcpFaultConfig",
    "LatencyConfig",
    "OfficeConfig",
    "RetryAfterMode",
    "parse_faults",
    "parse_hcp_faults",
    "parse_office",
]


@dataclass
class HcpFaultConfig(FaultConfig):
    """The ServiceTitan sandbox's `FaultConfig` plus `drop_rate`: the connection is cut before the request is
    handled (nothing committed; the client sees a truncated answer, as with commit-then-fail `drop`)."""

    drop_rate: float = 0.0

    @property
    def active(self) -> bool:
        return super().active or self.drop_rate > 0


def parse_hcp_faults(payload: object) -> HcpFaultConfig:
    if not isinstance(payload, dict):
        raise ConfigError("$", "must be a JSON object")
    rest = dict(payload)
    drop = rest.pop("drop_rate", 0.0)
    if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0.0 <= float(drop) <= 1.0:
        raise ConfigError("drop_rate", "must be a number in [0.0, 1.0]")
    base = parse_faults(rest)
    cfg = HcpFaultConfig(**{f.name: getattr(base, f.name) for f in fields(FaultConfig)}, drop_rate=float(drop))
    if cfg.error_rate + cfg.timeout_rate + cfg.commit_then_fail_rate + cfg.drop_rate > 1.0 + 1e-9:
        raise ConfigError("drop_rate", "error_rate + timeout_rate + commit_then_fail_rate + drop_rate must be <= 1")
    return cfg


@dataclass
class OfficeConfig:
    """The background "office" that works leads and jobs like a company's dispatcher and technicians would.

    Every `pace_s` seconds each open record moves one step: an open lead is converted into a job (or, for
    `lost_rate` of them, marked lost); a job goes needs scheduling → scheduled → in progress → complete unrated,
    which creates its invoice (open, a plausible total); an open invoice is paid on the next step, except for
    `unpaid_rate` of them. `cancel_rate` of jobs are pro canceled on the way. Fates are drawn from
    `random.Random(seed)` in id order, so a run is reproducible.
    """

    enabled: bool = False
    pace_s: float = 1.0
    seed: int = 0
    lost_rate: float = 0.1
    cancel_rate: float = 0.1
    unpaid_rate: float = 0.1
    min_total: float = 150.0
    max_total: float = 2500.0
    accounts: list[str] | None = None  # company ids; None: every account

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HcpConfig:
    """Start-up configuration of a Housecall Pro sandbox instance."""

    seed: int = 0
    # Housecall Pro publishes no limits; these are the sandbox's defaults per company (settable per account).
    rate: float = 20.0  # requests per second per company
    burst: int = 40
    retry_after: RetryAfterMode = "sometimes"  # whether a throttled answer carries Retry-After
    seed_demo_accounts: bool = True
    default_page_size: int = 10
    max_page_size: int = 200
    office: OfficeConfig = field(default_factory=OfficeConfig)
    preload_definitions: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_office(payload: Any, current: OfficeConfig) -> OfficeConfig:
    if not isinstance(payload, dict):
        raise ConfigError("$", "must be a JSON object")
    unknown = sorted(set(payload) - set(OfficeConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(unknown[0], "unknown field in office")
    accounts = payload.get("accounts", current.accounts)
    if accounts is not None and (not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts)):
        raise ConfigError("accounts", "must be null or a list of company ids")
    enabled = payload.get("enabled", current.enabled)
    if not isinstance(enabled, bool):
        raise ConfigError("enabled", "must be true or false")
    seed = payload.get("seed", current.seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed", "must be an integer")
    cfg = OfficeConfig(
        enabled=enabled,
        pace_s=_num(payload, "pace_s", current.pace_s, lo=0.01, hi=3600.0),
        seed=seed,
        lost_rate=_num(payload, "lost_rate", current.lost_rate, hi=1.0),
        cancel_rate=_num(payload, "cancel_rate", current.cancel_rate, hi=1.0),
        unpaid_rate=_num(payload, "unpaid_rate", current.unpaid_rate, hi=1.0),
        min_total=_num(payload, "min_total", current.min_total),
        max_total=_num(payload, "max_total", current.max_total),
        accounts=list(accounts) if accounts is not None else None,
    )
    if cfg.max_total < cfg.min_total:
        raise ConfigError("max_total", "must be >= min_total")
    return cfg
