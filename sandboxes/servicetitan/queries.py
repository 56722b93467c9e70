"""Query-string handling as ServiceTitan (ASP.NET) does it: case-insensitive names, unknown ones ignored,
malformed values → 400, paging envelope `{page, pageSize, hasMore, totalCount, data}`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from starlette.datastructures import QueryParams

from .errors import ApiError, field_error

MAX_IDS = 50
T = TypeVar("T")


class Dated(Protocol):
    id: int
    created_on: datetime
    modified_on: datetime


D = TypeVar("D", bound=Dated)


def parse_dt(value: str) -> datetime:
    """RFC 3339 (ServiceTitan writes 7 fractional digits; naive values are UTC). Raises ValueError."""
    text = value.strip().replace(" ", "+")  # an unencoded "+" in an offset arrives as a space
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Query:
    def __init__(self, params: QueryParams) -> None:
        self._params: dict[str, str] = {}
        for key, value in params.multi_items():
            self._params.setdefault(key.lower(), value)  # model binding is case-insensitive; first value wins

    def text(self, name: str) -> str | None:
        value = self._params.get(name.lower())
        return value if value not in (None, "") else None

    def integer(self, name: str) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise field_error(name, f"The value '{value}' is not valid.") from None

    def number(self, name: str) -> float | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            raise field_error(name, f"The value '{value}' is not valid.") from None

    def flag(self, name: str) -> bool | None:
        value = self.text(name)
        if value is None:
            return None
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise field_error(name, f"The value '{value}' is not valid.")

    def dt(self, name: str) -> datetime | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return parse_dt(value)
        except ValueError:
            raise field_error(name, f"The value '{value}' is not valid.") from None

    def guid(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return str(uuid.UUID(value)).lower()
        except ValueError:
            raise field_error(name, f"The value '{value}' is not valid.") from None

    def csv(self, name: str) -> list[str]:
        value = self.text(name)
        return [v.strip() for v in value.split(",") if v.strip()] if value else []

    def ids(self, name: str = "ids") -> list[int] | None:
        """`ids=1,2,3`: at most 50, else 400 like ServiceTitan."""
        values = self.csv(name)
        if not values:
            return None
        if len(values) > MAX_IDS:
            raise field_error("Ids", f"Simple IDs lookup should not exceed {MAX_IDS} elements.")
        try:
            return [int(v) for v in values]
        except ValueError:
            raise field_error("Ids", f"The value '{self.text(name)}' is not valid.") from None


def filter_dates(items: Iterable[D], q: Query) -> list[D]:
    """createdBefore / createdOnOrAfter / modifiedBefore / modifiedOnOrAfter (on-or-after inclusive)."""
    cb, coa, mb, moa = (
        q.dt("createdBefore"),
        q.dt("createdOnOrAfter"),
        q.dt("modifiedBefore"),
        q.dt("modifiedOnOrAfter"),
    )
    out = []
    for item in items:
        if cb is not None and not item.created_on < cb:
            continue
        if coa is not None and not item.created_on >= coa:
            continue
        if mb is not None and not item.modified_on < mb:
            continue
        if moa is not None and not item.modified_on >= moa:
            continue
        out.append(item)
    return out


def filter_ids(items: Iterable[D], q: Query) -> list[D]:
    wanted = q.ids()
    if wanted is None:
        return list(items)
    keep = set(wanted)
    return [i for i in items if i.id in keep]


def filter_active(items: Iterable[T], q: Query, active_of: Callable[[T], bool]) -> list[T]:
    value = (q.text("active") or "True").lower()
    if value == "any":
        return list(items)
    if value not in ("true", "false"):
        raise field_error("active", f"The value '{q.text('active')}' is not valid.")
    want = value == "true"
    return [i for i in items if active_of(i) == want]


SORT_RE = re.compile(r"^\s*([+-]?)\s*([A-Za-z]+)\s*$")


def apply_sort(items: list[D], q: Query, fields: dict[str, Callable[[D], Any]]) -> list[D]:
    """`sort=+Field` / `-Field` (a bare field is ascending); default by id ascending."""
    raw = q.text("sort")
    if raw is None:
        return sorted(items, key=lambda i: i.id)
    m = SORT_RE.match(raw)
    lookup = {k.lower(): (k, f) for k, f in fields.items()}
    if not m or m.group(2).lower() not in lookup:
        raise field_error("Sort", f"Sorting by '{raw}' is not supported. Available fields are: {', '.join(fields)}.")
    _, key = lookup[m.group(2).lower()]
    return sorted(items, key=lambda i: (key(i), i.id), reverse=m.group(1) == "-")


def paginate(
    items: Sequence[T], q: Query, to_json: Callable[[T], dict[str, Any]], *, default_size: int, max_size: int
) -> dict[str, Any]:
    page = q.integer("page")
    page = page if page is not None and page >= 1 else 1  # ServiceTitan tolerates page=0
    size = q.integer("pageSize")
    size = default_size if size is None or size < 1 else min(size, max_size)
    start = (page - 1) * size
    chunk = items[start : start + size]
    return {
        "page": page,
        "pageSize": size,
        "hasMore": start + size < len(items),
        "totalCount": len(items) if q.flag("includeTotal") else None,
        "data": [to_json(i) for i in chunk],
    }


def required(name: str, value: Any) -> None:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ApiError(400, None, {name: [f"The {name} field is required."]})
