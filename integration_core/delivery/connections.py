"""From a stored connection to a live provider: decrypt, configure, attach the shared rate limiter."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from integration_core import crypto
from integration_core.db.models import ProviderConnection
from integration_core.delivery.ratelimit import PostgresRateLimiter
from integration_core.providers.base import ConnectionConfig, Provider, RequestGate
from integration_core.settings import Settings

ProviderFactory = Callable[[ConnectionConfig, RequestGate | None, Settings], Provider]


def default_provider_factory(config: ConnectionConfig, gate: RequestGate | None, settings: Settings) -> Provider:
    from integration_core.providers.servicetitan.provider import ServiceTitanProvider

    t = settings.delivery_request_timeout_seconds
    return ServiceTitanProvider(config, gate=gate, timeout=httpx.Timeout(t, connect=min(t, 5.0)))


def connection_config(row: ProviderConnection, secret_key: str) -> ConnectionConfig:
    """Decrypt a stored connection. Raises `crypto.SecretDecryptionError` when SECRET_KEY does not fit."""
    return ConnectionConfig(
        provider="servicetitan",
        environment=row.environment,
        base_url=row.base_url,
        tenant_id=row.tenant_id,
        client_id=crypto.decrypt(row.client_id_encrypted, secret_key),
        client_secret=SecretStr(crypto.decrypt(row.client_secret_encrypted, secret_key)),
        app_key=SecretStr(crypto.decrypt(row.app_key_encrypted, secret_key)),
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
    )
    provider = (factory or default_provider_factory)(config, limiter, settings)
    return LiveConnection(row, config, limiter, provider)
