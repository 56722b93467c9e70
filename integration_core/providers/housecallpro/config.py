"""A Housecall Pro connection: the account, its API key (the one secret) and the delivery mode's settings.

Housecall Pro's API has no tenant id in its paths: the API key *is* the company. ``company_id`` (Housecall Pro's
id of that company) is the account id: the key of the shared rate budget and what operators see.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from integration_core.providers.base import ConnectionSettings

__all__ = [
    "API_HOST",
    "API_HOSTS_BY_ENVIRONMENT",
    "DEFAULT_LEAD_SOURCE",
    "HousecallProConnection",
    "HousecallProDeliveryMode",
    "HousecallProSettings",
]

API_HOST = "https://api.housecallpro.com"
API_HOSTS_BY_ENVIRONMENT: dict[str, tuple[str, ...]] = {"production": ("api.housecallpro.com",)}
DEFAULT_LEAD_SOURCE = "TradeEngage"
HousecallProDeliveryMode = Literal["lead", "job"]


class HousecallProConnection(ConnectionSettings):
    """Housecall Pro: an API key (secret), the account id, the delivery mode and the lead source.

    Attributes:
        environment: ``production`` (Housecall Pro's API host) or ``sandbox`` (a ``base_url`` on loopback).
        company_id: the Housecall Pro company the key belongs to (``GET /company`` names it).
        api_key: the company or application API key, sent as ``Authorization: Token <key>``.
        delivery_mode: ``lead`` (a lead the office converts, default) or ``job`` (an unscheduled job).
        lead_source: the lead source every record we create carries: the company's attribution of our referrals,
            and the filter that narrows lookups of our leads.
        job_type_id / business_unit_id: optional ``job_fields`` for job mode.
        rate_limit_per_second / rate_limit_burst: our own budget (Housecall Pro publishes none; see docs).
    """

    PROVIDER_HOSTS: ClassVar[dict[str, tuple[str, ...]]] = API_HOSTS_BY_ENVIRONMENT
    REQUIRED_BY_MODE: ClassVar[dict[str, tuple[str, ...]]] = {"lead": (), "job": ()}
    # find the customer, create it, its address, the lead (or job)
    REQUESTS_PER_DELIVERY: ClassVar[dict[str, int]] = {"lead": 4, "job": 4}

    provider: Literal["housecallpro"] = "housecallpro"
    environment: Literal["production", "sandbox"] = "sandbox"
    delivery_mode: HousecallProDeliveryMode = "lead"
    company_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    api_key: SecretStr
    lead_source: str = Field(DEFAULT_LEAD_SOURCE, min_length=1, max_length=100)
    job_type_id: str | None = Field(None, min_length=1, max_length=64)
    business_unit_id: str | None = Field(None, min_length=1, max_length=64)
    rate_limit_per_second: float = Field(5.0, gt=0)
    rate_limit_burst: int = Field(5, ge=1)

    @property
    def account_id(self) -> str:
        """The Housecall Pro account: the key of the shared rate budget."""
        return self.company_id

    @property
    def api_base(self) -> str:
        """API root: the configured ``base_url`` (sandbox), else Housecall Pro's."""
        return self.base_url.rstrip("/") if self.base_url else API_HOST


HousecallProSettings = HousecallProConnection
"""The name the client, mapping and tests use."""
