"""What the ServiceTitan and Housecall Pro provider test helpers share: homeowners nobody else has, and the check
that no secret or homeowner datum leaks into an error."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterable
from typing import Any

from integration_core.providers.base import DeliveryRequest, Permanent

_counter = itertools.count(1)


def unique_homeowner() -> dict[str, Any]:
    """Homeowner fields nobody else in the tenant/account has (a fresh phone, e-mail, name and street)."""
    n = next(_counter)
    digits = f"{random.randrange(200, 999)}{random.randrange(200, 999)}{n % 10000:04d}"
    return {
        "homeowner_name": f"Pat Testperson{n}",
        "homeowner_phone": f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
        "homeowner_email": f"pat{n}.{uuid.uuid4().hex[:6]}@example.com",
        "street": f"{100 + n} Elm Street",
    }


def assert_no_leak(
    exc: BaseException,
    *,
    secrets: Iterable[str] = (),
    request: DeliveryRequest | None = None,
    extra: Iterable[str] = (),
) -> None:
    """No secret and no homeowner datum appears in the exception's str, repr, args or field errors."""
    texts = [str(exc), repr(exc), *(str(arg) for arg in exc.args)]
    if isinstance(exc, Permanent):
        texts.append(repr(exc.field_errors))
    forbidden = [*extra, *secrets]
    if request is not None:
        forbidden += request.sensitive_values()
        forbidden += [request.homeowner_name.split()[0], request.street.split()[-2]]
    for text in texts:
        for value in forbidden:
            if value and len(value) >= 4:
                assert value.casefold() not in text.casefold(), f"{value!r} leaked into {text!r}"
