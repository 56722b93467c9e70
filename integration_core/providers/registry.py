"""The providers a connection can name: provider name → its connection model and its factory.

Adding a field-service system is registering it here: a pydantic connection model (its settings, with secrets
as `SecretStr` fields) and a factory building its `Provider`. Everything else — the admin API, `si connections
add`, storage (non-secret settings as JSON, each secret encrypted on its own), the engine, the limiter (keyed by
provider and `account_id`), the dry run and the health checks — works from this entry.

A connection model must offer: `provider`, `environment`, `base_url`, `delivery_mode`, `rate_limit_per_second`,
`rate_limit_burst`, `account_id` (the provider account: the shared rate budget's key) and `missing_settings()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

from integration_core.domain import ProviderName
from integration_core.providers.base import (
    REDACTED,
    Provider,
    RequestGate,
    base_url_problem,
    burst_problem,
    rate_problem,
    secret_problem,
)
from integration_core.providers.housecallpro import config as housecallpro_config
from integration_core.providers.servicetitan.config import API_HOSTS_BY_ENVIRONMENT, ServiceTitanConnection

if TYPE_CHECKING:
    from integration_core.settings import Settings

__all__ = [
    "COMMON_FIELDS",
    "PROVIDERS",
    "ProviderFactory",
    "ProviderSpec",
    "UnknownProvider",
    "get",
    "input_problems",
    "names",
]

ProviderFactory = Callable[[Any, RequestGate | None, "Settings"], Provider]

COMMON_FIELDS = ("provider", "environment", "base_url", "delivery_mode", "rate_limit_per_second", "rate_limit_burst")
"""Connection settings every provider has: stored as columns of `provider_connections`."""


class UnknownProvider(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown provider {name!r} (known: {', '.join(names())})")


@dataclass(frozen=True)
class ProviderSpec:
    """One registered provider.

    Attributes:
        name: the `provider` column's value (`domain.ProviderName`).
        label: how operators see it.
        model: the connection model (settings and `SecretStr` secrets).
        hosts: environment → the provider's own API hosts a `base_url` may name outside the sandbox.
        factory: builds the provider for a decrypted connection; None while the provider is being built.
    """

    name: str
    label: str
    model: type[BaseModel]
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    factory: ProviderFactory | None = None

    @property
    def secret_fields(self) -> tuple[str, ...]:
        """The model's `SecretStr` fields: encrypted at rest, write-only."""
        return tuple(name for name, f in self.model.model_fields.items() if _is_secret(f.annotation))

    def build(self, config: Any, gate: RequestGate | None, settings: Settings) -> Provider:
        if self.factory is None:
            raise NotImplementedError(f"the {self.label} provider is not available in this build")
        return self.factory(config, gate, settings)

    def settings_of(self, config: BaseModel) -> dict[str, Any]:
        """The provider's own non-secret settings (stored as JSON beside the common columns)."""
        dumped: dict[str, Any] = config.model_dump(mode="json", exclude={*COMMON_FIELDS, *self.secret_fields})
        return {k: v for k, v in dumped.items() if v is not None}

    def secrets_of(self, config: BaseModel) -> dict[str, str]:
        """The plaintext secrets by field name (to encrypt them; never log them)."""
        values = {name: getattr(config, name) for name in self.secret_fields}
        return {name: v.get_secret_value() for name, v in values.items() if isinstance(v, SecretStr)}

    def load(self, common: Mapping[str, Any], settings: Mapping[str, Any], secrets: Mapping[str, str] | None) -> Any:
        """A stored connection as its model; without `secrets` every secret is `[redacted]` (enough to render
        requests for a dry run, never to send)."""
        plain = secrets if secrets is not None else {name: REDACTED for name in self.secret_fields}
        known = set(self.model.model_fields)
        data = {k: v for k, v in {**settings, **common, **plain}.items() if k in known}
        return self.model.model_validate(data, context={"stored": True})


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def _servicetitan_factory(config: Any, gate: RequestGate | None, settings: Settings) -> Provider:
    import httpx

    from integration_core.providers.servicetitan.provider import ServiceTitanProvider

    t = settings.delivery_request_timeout_seconds
    return ServiceTitanProvider(config, gate=gate, timeout=httpx.Timeout(t, connect=min(t, 5.0)))


def _housecallpro_factory(config: Any, gate: RequestGate | None, settings: Settings) -> Provider:
    import httpx

    from integration_core.providers.housecallpro.provider import HousecallProProvider

    t = settings.delivery_request_timeout_seconds
    return HousecallProProvider(config, gate=gate, timeout=httpx.Timeout(t, connect=min(t, 5.0)))


PROVIDERS: dict[str, ProviderSpec] = {
    ProviderName.servicetitan.value: ProviderSpec(
        name=ProviderName.servicetitan.value,
        label="ServiceTitan",
        model=ServiceTitanConnection,
        hosts=API_HOSTS_BY_ENVIRONMENT,
        factory=_servicetitan_factory,
    ),
    ProviderName.housecallpro.value: ProviderSpec(
        name=ProviderName.housecallpro.value,
        label="Housecall Pro",
        model=housecallpro_config.HousecallProConnection,
        hosts=housecallpro_config.API_HOSTS_BY_ENVIRONMENT,
        factory=_housecallpro_factory,
    ),
}


def get(name: str) -> ProviderSpec:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(name) from None


def names() -> list[str]:
    return list(PROVIDERS)


def input_problems(spec: ProviderSpec, config: Any) -> dict[str, str]:
    """What operator input may not hold, for any provider (field → message; empty when acceptable): base URL on
    the provider's own hosts (loopback in the sandbox environment), rate and burst bounds, secret lengths and
    characters, and the settings the delivery mode needs. Stored rows are not re-checked (they may predate a
    bound)."""
    problems: dict[str, str] = {}
    if config.base_url and (p := base_url_problem(config.base_url, config.environment, spec.hosts)):
        problems["base_url"] = p
    if p := rate_problem(config.rate_limit_per_second):
        problems["rate_limit_per_second"] = p
    if p := burst_problem(config.rate_limit_burst):
        problems["rate_limit_burst"] = p
    for name, value in spec.secrets_of(config).items():
        if p := secret_problem(value):
            problems[name] = p
    for name, messages in config.missing_settings().items():
        problems.setdefault(name, "; ".join(messages))
    return problems
