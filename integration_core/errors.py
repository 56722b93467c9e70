"""Domain errors raised by the core and mapped to HTTP / CLI answers at the edges."""

from __future__ import annotations


class DomainError(Exception):
    """Base for errors a caller can act on."""


class NotFound(DomainError):
    def __init__(self, entity: str, ident: object) -> None:
        super().__init__(f"{entity} {ident} not found")
        self.entity = entity
        self.ident = ident


class InvalidInput(DomainError):
    """Field-level validation failure: a list of (location, message) pairs."""

    def __init__(self, errors: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in errors))
        self.errors = errors

    @classmethod
    def field(cls, loc: tuple[str | int, ...], message: str) -> InvalidInput:
        return cls([(loc, message)])


class Conflict(DomainError):
    """The request conflicts with stored state (e.g. an Idempotency-Key reused with another body)."""
