"""Provider-neutral customer de-duplication helpers: comparing a provider's customer records with a referral."""

from __future__ import annotations

import re

from integration_core.providers.base import DeliveryRequest

__all__ = ["normalize_phone", "normalize_text", "same_address", "same_name"]


def normalize_phone(value: str | None) -> str:
    """Digits only, without a leading US country code: ``+1 (512) 555-0100`` → ``5125550100``."""
    digits = re.sub(r"\D", "", value or "")
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return digits


def normalize_text(value: str | None) -> str:
    """Lower case, dots and commas as spaces, runs of white space as one: ``1 Main St.`` → ``1 main st``."""
    return " ".join((value or "").lower().replace(".", " ").replace(",", " ").split())


def same_name(a: str, b: str) -> bool:
    return normalize_text(a) == normalize_text(b) and bool(normalize_text(a))


def same_address(street: str | None, unit: str | None, zip_code: str | None, request: DeliveryRequest) -> bool:
    """Whether a provider's address is the request's service address (street, unit/line 2 and 5-digit zip)."""
    return (
        normalize_text(street) == normalize_text(request.street)
        and normalize_text(unit) == normalize_text(request.unit)
        and normalize_text(zip_code)[:5] == normalize_text(request.zip)[:5]
    )
