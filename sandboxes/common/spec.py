"""The OpenAPI validation harness both sandboxes share, parametrised by a provider's definitions.

What is the same for every provider lives here: httpx exchanges seen through openapi-core's request/response
protocols, readable lines for openapi-core's errors, the path-template regex, the `validate_request` /
`validate_response` methods, and the validating transports (async and sync) that wrap an httpx transport and
check every exchange passing through. What differs (which files, how a path finds its operation, field names in
error maps, the undescribed error shapes) stays in `sandboxes/<provider>/spec.py`, which names its own
`SpecProfile` and subclasses the transports with it.

`openapi_core` is slow to import, so it is imported lazily (inside functions).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx


class SpecViolation(AssertionError):
    """An exchange a provider's definition does not allow; `errors` lists every failure found."""

    subject: ClassVar[str] = "the definition"  # e.g. "the ServiceTitan definitions"

    def __init__(self, kind: str, method: str, path: str, errors: list[str], status: int | None = None) -> None:
        self.kind = kind  # "request" | "response"
        self.method = method.upper()
        self.path = path
        self.status = status
        self.errors = errors
        where = f"{self.method} {path}" + (f" -> {status}" if status is not None else "")
        super().__init__(f"{kind} {where} violates {self.subject}:\n  - " + "\n  - ".join(errors))


def template_regex(template: str) -> re.Pattern[str]:
    """`/leads/{id}` → a regex matching `/leads/abc` (one path segment per parameter)."""
    parts = re.split(r"(\{[^}]+\})", template)
    pattern = "".join("([^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}$")


def leaf_errors(error: Any, wrappers: tuple[str, ...] = ("oneOf", "anyOf")) -> Iterator[Any]:
    """jsonschema errors, descending through combinator wrappers to the errors that explain them."""
    if error.validator in wrappers and error.context:
        for sub in error.context:
            yield from leaf_errors(sub, wrappers)
    else:
        yield error


def describe(exc: BaseException, wrappers: tuple[str, ...] = ("oneOf", "anyOf")) -> list[str]:
    """Readable lines for an openapi-core validation exception (with every schema error it carries)."""
    cause = exc.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or getattr(exc, "schema_errors", None)
    head = f"{type(exc).__name__}: {exc}"
    if schema_errors:
        name = getattr(exc, "name", None)
        prefix = type(exc).__name__ + (f" ({name})" if name else "")
        return [
            f"{prefix}: {'/'.join(str(p) for p in err.absolute_path) or '$'}: {err.message}"
            for top in schema_errors
            for err in leaf_errors(top, wrappers)
        ]
    if cause is not None and str(cause) and str(cause) not in head:
        return [f"{head} ({type(cause).__name__}: {cause})"]
    return [head]


class OpenAPIRequest:
    """An httpx.Request seen through openapi-core's Request protocol (host pinned to the definition's server)."""

    def __init__(self, server_url: str, request: httpx.Request, body: bytes | None) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = server_url
        self.path = request.url.path
        self.method = request.method.lower()
        self.body = body or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.items())),
        )


class OpenAPIResponse:
    """An answer (status, headers, decoded body) seen through openapi-core's Response protocol."""

    def __init__(self, status_code: int, headers: httpx.Headers, data: bytes) -> None:
        from werkzeug.datastructures import Headers

        self.status_code = status_code
        self.data = data
        self.content_type = headers.get("content-type", "")
        self.headers = Headers(list(headers.items()))


def has_content(request: httpx.Request) -> bool:
    """Whether `request` has a body already read (False for an unread stream)."""
    try:
        return bool(request.content)
    except httpx.RequestNotRead:
        return False


class ExchangeValidator(Protocol):
    """What the transports need of a provider's definitions."""

    def request_errors(self, request: httpx.Request, body: bytes | None = None) -> list[str]: ...

    def response_errors(
        self, request: httpx.Request, status: int, headers: httpx.Headers, body: bytes
    ) -> list[str]: ...


class ValidatesExchanges:
    """`validate_request` / `validate_response` for a definitions class that has the `*_errors` methods."""

    violation: ClassVar[type[SpecViolation]] = SpecViolation

    def request_errors(self, request: httpx.Request, body: bytes | None = None) -> list[str]:
        raise NotImplementedError

    def response_errors(self, request: httpx.Request, status: int, headers: httpx.Headers, body: bytes) -> list[str]:
        raise NotImplementedError

    def validate_request(self, request: httpx.Request, body: bytes | None = None) -> None:
        errors = self.request_errors(request, body)
        if errors:
            raise self.violation("request", request.method, request.url.path, errors)

    def validate_response(self, request: httpx.Request, response: httpx.Response) -> None:
        errors = self.response_errors(request, response.status_code, response.headers, response.content)
        if errors:
            raise self.violation("response", request.method, request.url.path, errors, response.status_code)


@dataclass(frozen=True)
class SpecProfile:
    """A provider's parameters for the validating transports."""

    violation: type[SpecViolation]
    # request extension a test sets on a request it sends invalid on purpose (`extensions={key: value}`)
    expect_invalid: tuple[str, str]
    undescribed_path: re.Pattern[str]  # paths the definitions do not describe (not checked)
    default_definitions: Callable[[], ExchangeValidator]


@dataclass
class _Recorder:
    profile: SpecProfile
    definitions: ExchangeValidator
    raise_on_violation: bool
    violations: list[SpecViolation] = field(default_factory=list)
    exchanges: int = 0

    def check_request(self, request: httpx.Request, body: bytes) -> None:
        errors = self.definitions.request_errors(request, body)
        key, value = self.profile.expect_invalid
        violation = self.profile.violation
        if request.extensions.get(key) == value:
            if not errors and not self.profile.undescribed_path.match(request.url.path):
                message = ["marked invalid on purpose, but it validates"]
                self._record(violation("request", request.method, request.url.path, message))
        elif errors:
            self._record(violation("request", request.method, request.url.path, errors))

    def check_response(self, request: httpx.Request, status: int, headers: httpx.Headers, body: bytes) -> None:
        self.exchanges += 1
        errors = self.definitions.response_errors(request, status, headers, body)
        if errors:
            self._record(self.profile.violation("response", request.method, request.url.path, errors, status))

    def _record(self, violation: SpecViolation) -> None:
        self.violations.append(violation)
        if self.raise_on_violation:
            raise violation

    def assert_clean(self) -> None:
        if self.violations:
            raise AssertionError(
                f"{len(self.violations)} exchange(s) violate {self.profile.violation.subject}:\n"
                + "\n".join(str(v) for v in self.violations)
            )


def decoded_safe(response: httpx.Response, raw: bytes) -> bytes:
    """`raw` with its content-encoding undone (as it came if it cannot be decoded)."""
    try:
        return httpx.Response(response.status_code, headers=response.headers, content=raw).read()
    except httpx.DecodingError:
        return raw


class _Recording:
    profile: ClassVar[SpecProfile]
    _rec: _Recorder

    def _start(self, definitions: ExchangeValidator | None, raise_on_violation: bool) -> None:
        self._rec = _Recorder(self.profile, definitions or self.profile.default_definitions(), raise_on_violation)

    @property
    def violations(self) -> list[SpecViolation]:
        return self._rec.violations

    @property
    def exchanges(self) -> int:
        """Responses validated so far."""
        return self._rec.exchanges

    def assert_clean(self) -> None:
        self._rec.assert_clean()


class ValidatingTransport(_Recording, httpx.AsyncBaseTransport):
    """Wraps an async httpx transport; validates every request and response against the definitions.

    Violations are recorded in `.violations` (and raised as `SpecViolation` only if `raise_on_violation`); call
    `assert_clean()` at the end of a test. A request sent invalid on purpose carries the profile's
    `expect_invalid` extension (then it must be invalid; its response is still validated). A provider subclasses
    this with its `profile`.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        definitions: ExchangeValidator | None = None,
        raise_on_violation: bool = False,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self._start(definitions, raise_on_violation)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self._rec.check_request(request, body)
        response = await self.inner.handle_async_request(request)
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        self._rec.check_response(request, response.status_code, response.headers, decoded_safe(response, raw))
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncValidatingTransport(_Recording, httpx.BaseTransport):
    """`ValidatingTransport` for synchronous httpx clients."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        definitions: ExchangeValidator | None = None,
        raise_on_violation: bool = False,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self._start(definitions, raise_on_violation)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self._rec.check_request(request, body)
        response = self.inner.handle_request(request)
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        self._rec.check_response(request, response.status_code, response.headers, decoded_safe(response, raw))
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self.inner.close()


__all__ = [
    "ExchangeValidator",
    "OpenAPIRequest",
    "OpenAPIResponse",
    "SpecProfile",
    "SpecViolation",
    "SyncValidatingTransport",
    "ValidatesExchanges",
    "ValidatingTransport",
    "decoded_safe",
    "describe",
    "has_content",
    "leaf_errors",
    "template_regex",
]
