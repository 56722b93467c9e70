"""A local Housecall Pro: the public API the referral client uses (leads, customers and addresses, jobs,
invoices, lead sources, job types, tags, webhook subscription) in the shapes of Housecall Pro's own OpenAPI
definition, with `Authorization: Token <api-key>` auth, 429 throttling, faults, a back office, an event hook
and a control API under `/_sandbox/...`. See docs/sandbox.md."""

from .app import create_app, serve
from .config import HcpConfig, OfficeConfig
from .state import EventListener, Sandbox

__all__ = ["EventListener", "HcpConfig", "OfficeConfig", "Sandbox", "create_app", "serve"]
