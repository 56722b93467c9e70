"""From a stored connection to a live provider: decrypt, configure, attach the shared rate limiter."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

import httpx
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from integration_core import crypto
from integration_core.db.models import ProviderConnection
from integration_core.delivery.ratelimit import PostgresRateLimiter
from integration_core.providers.base import REDACTED, ConnectionConfig, Provider, RequestGate
from integration_core.settings import Settings

ProviderFactory = Callable[[ConnectionConfig, RequestGate | None, Settings], Provider]


def default_provider_factory(config: ConnectionConfig, gate: RequestGate | None, settings: Settings) -> Provider:
    from integration_core.providers.servicetitan.provider import ServiceTitanProvider

    t = settings.delivery_request_timeout_seconds
    return ServiceTitanProvider(config, gate=gate, timeout=httpx.Timeout(t, connect=min(t, 5.0)))


def connection_config(row: ProviderConnection, secret_key: str | None) -> ConnectionConfig:
    """A stored connection as the provider sees it. With `secret_key`, the credentials are decrypted (raises
    `crypto.SecretDecryptionError` when the key does not fit); without, they are placeholders — enough to
    render payloads (dry-run), never to send."""
    encrypted = (row.client_id_encrypted, row.client_secret_encrypted, row.app_key_encrypted)
    if secret_key is None:
        client_id, client_secret, app_key = REDACTED, REDACTED, REDACTED
    else:
        client_id, client_secret, app_key = (crypto.decrypt(value, secret_key) for value in encrypted)
    return ConnectionConfig(
        provider="servicetitan",
        environment=row.environment,
        base_url=row.base_url,
        tenant_id=row.tenant_id,
        client_id=client_id,
        client_secret=SecretStr(client_secret),
        app_key=SecretStr(app_key),
        delivery_mode=row.delivery_mode,
        booking_provider_id=row.booking_provider_id,
        business_unit_id=row.business_unit_id,
        job_type_id=row.job_type_id,
        campaign_id=row.campaign_id,
        priority=row.priority,
        external_data_guid=uuid.UUID(row.external_data_guid) if row.external_data_guid else None,
        rate_limit_per_second=row.rate_limit_per_second,
        rate_limit_burst=row.rate_limit_burst,
    )


@dataclass
class LiveConnection:
    row: ProviderConnection
    config: ConnectionConfig
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
        tenant_id=row.tenant_id,
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
