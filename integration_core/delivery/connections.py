"""From a stored connection to a live provider: decrypt, configure, attach the shared rate limiter."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from integration_core import crypto
from integration_core.db.models import ProviderConnection
from integration_core.delivery.ratelimit import PostgresRateLimiter
from integration_core.providers import registry
from integration_core.providers.base import Provider, RequestGate
from integration_core.settings import Settings

ProviderFactory = Callable[[Any, RequestGate | None, Settings], Provider]


def default_provider_factory(config: Any, gate: RequestGate | None, settings: Settings) -> Provider:
    """The registered provider for `config.provider` (`providers/registry.py`)."""
    return registry.get(config.provider).build(config, gate, settings)


def decrypt_secrets(row: ProviderConnection, secret_key: str) -> dict[str, str]:
    """The connection's secrets in plaintext — for the provider only; never log them. Raises
    `crypto.SecretDecryptionError` when the key does not fit."""
    return {name: crypto.decrypt(value, secret_key) for name, value in row.secrets_encrypted.items()}


def connection_config(row: ProviderConnection, secret_key: str | None) -> Any:
    """A stored connection as its provider's connection model (`registry.get(row.provider).model`). With
    `secret_key`, the secrets are decrypted (raises `crypto.SecretDecryptionError` when the key does not fit);
    without, they are placeholders — enough to render requests (dry run), never to send."""
    spec = registry.get(row.provider)
    common = {
        "provider": row.provider,
        "environment": row.environment,
        "base_url": row.base_url,
        "delivery_mode": row.delivery_mode,
        "rate_limit_per_second": row.rate_limit_per_second,
        "rate_limit_burst": row.rate_limit_burst,
    }
    secrets = decrypt_secrets(row, secret_key) if secret_key is not None else None
    return spec.load(common, row.settings, secrets)


@dataclass
class LiveConnection:
    row: ProviderConnection
    config: Any  # the provider's connection model
    limiter: PostgresRateLimiter
    provider: Provider

    async def aclose(self) -> None:
        await self.provider.aclose()


async def enabled_connection(session: AsyncSession, company_id: uuid.UUID) -> ProviderConnection | None:
    return (
        await session.scalars(
            select(ProviderConnection).where(
                ProviderConnection.company_id == company_id, ProviderConnection.enabled.is_(True)
            )
        )
    ).first()


def open_connection(
    engine: AsyncEngine, row: ProviderConnection, settings: Settings, factory: ProviderFactory | None = None
) -> LiveConnection:
    config = connection_config(row, settings.secret_key.get_secret_value())
    limiter = PostgresRateLimiter(
        engine,
        provider=row.provider,
        account_id=row.account_id,
        budget_per_second=row.rate_limit_per_second,
        burst=row.rate_limit_burst,
        safety_margin=settings.rate_limit_safety_margin,
        recovery_per_second=settings.rate_limit_recovery_per_second,
        request_seconds=settings.delivery_request_timeout_seconds * 1.5,
        db_retry_seconds=settings.db_retry_seconds,
    )
    provider = (factory or default_provider_factory)(config, _Gate(limiter), settings)
    return LiveConnection(row, config, limiter, provider)


# Set by the engine around a delivery: awaited once a write request has its rate-limiter slot, right before it
# leaves (the engine records the delivery attempt there, so "in flight" means "a write may have left").
before_request: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar("before_request", default=None)


class _Gate:
    """The provider's `RequestGate`: the tenant's shared rate budget, then the engine's last word."""

    def __init__(self, limiter: PostgresRateLimiter) -> None:
        self.limiter = limiter

    async def acquire(self, *, write: bool = True) -> None:
        await self.limiter.acquire(write=write)
        hook = before_request.get()
        if hook is not None and write:  # reads create nothing: only a write needs the attempt recorded first
            await hook()
