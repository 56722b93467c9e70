"""A ServiceTitan connection: the tenant, its app credentials and the ids its delivery mode needs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, SecretStr

from integration_core.providers.base import ConnectionSettings

__all__ = ["API_HOSTS_BY_ENVIRONMENT", "ConnectionConfig", "Priority", "ServiceTitanConnection"]

Priority = Literal["Low", "Normal", "High", "Urgent"]

API_HOSTS_BY_ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "production": ("api.servicetitan.io", "auth.servicetitan.io"),
    "integration": ("api-integration.servicetitan.io", "auth-integration.servicetitan.io"),
}

_ID = Field(None, gt=0, le=2**63 - 1)


def _digits_id(value: Any) -> Any:
    return str(value).strip() if isinstance(value, int | str) else value


class ServiceTitanConnection(ConnectionSettings):
    """ServiceTitan: OAuth client credentials plus the app key (secrets), the tenant, and per delivery mode the
    booking provider (``booking``) or the business unit, job type, campaign and externalData GUID (``job``)."""

    PROVIDER_HOSTS: ClassVar[dict[str, tuple[str, ...]]] = API_HOSTS_BY_ENVIRONMENT
    REQUIRED_BY_MODE: ClassVar[dict[str, tuple[str, ...]]] = {
        "booking": ("booking_provider_id",),
        "job": ("business_unit_id", "job_type_id", "campaign_id", "external_data_guid"),
    }
    # booking: the booking; job: find the customer, create it, its location, the job
    REQUESTS_PER_DELIVERY: ClassVar[dict[str, int]] = {"booking": 1, "job": 4}

    provider: Literal["servicetitan"] = "servicetitan"
    delivery_mode: Literal["booking", "job"] = "booking"
    tenant_id: Annotated[str, BeforeValidator(_digits_id), Field(pattern=r"^\d{1,18}$")]
    client_id: SecretStr
    client_secret: SecretStr
    app_key: SecretStr
    booking_provider_id: int | None = _ID
    business_unit_id: int | None = _ID
    job_type_id: int | None = _ID
    campaign_id: int | None = _ID
    priority: Priority = "Normal"
    external_data_guid: uuid.UUID | None = None

    @property
    def account_id(self) -> str:
        """The ServiceTitan tenant: the key of the shared rate budget."""
        return self.tenant_id


ConnectionConfig = ServiceTitanConnection
"""The name the ServiceTitan client, mapping and tests use."""
