"""Parsing of control-API payloads as both sandboxes do it: `ConfigError` (answered 422 with `field` and
`error`) and typed field readers that name the offending field."""

from __future__ import annotations

import math
from typing import Any, Literal

AppliesTo = Literal["writes", "all"]


class ConfigError(ValueError):
    """A control-API payload the sandbox cannot accept (answered 422 with `field` and `error`)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def number(payload: dict[str, Any], key: str, default: float, *, lo: float = 0.0, hi: float = math.inf) -> float:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise ConfigError(key, f"must be a number in [{lo}, {hi}]")
    return float(value)


def integer(payload: dict[str, Any], key: str, default: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, "must be an integer")
    return int(value)


def boolean(payload: dict[str, Any], key: str, default: bool) -> bool:
    value = payload.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(key, "must be true or false")
    return value


def choice(payload: dict[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = payload.get(key, default)
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}")
    return str(value)


def known(payload: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ConfigError(unknown[0], f"unknown field in {where}")


__all__ = ["AppliesTo", "ConfigError", "boolean", "choice", "integer", "known", "number"]
