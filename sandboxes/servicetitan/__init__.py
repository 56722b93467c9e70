"""A local ServiceTitan: token endpoint, the tenant API the referral client uses (bookings, customers,
locations, jobs, lookups, invoices) with ServiceTitan's shapes, limits and errors, plus a control API under
`/_sandbox/...` for lifecycle, faults and inspection. See docs/sandbox.md."""

from .app import create_app, serve
from .config import FaultConfig, LatencyConfig, OfficeConfig, SandboxConfig
from .state import Sandbox

__all__ = ["FaultConfig", "LatencyConfig", "OfficeConfig", "Sandbox", "SandboxConfig", "create_app", "serve"]
