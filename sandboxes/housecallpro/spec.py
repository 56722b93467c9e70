"""Housecall Pro's own OpenAPI definition (`openapi/housecall.v1.yaml`): loading, lookup and validation of
traffic against it.

The definition is not strictly valid OpenAPI (arrays without `items`, a GET with a `requestBody`), so it is
loaded without validating the definition itself: `OpenAPI.from_file_path(path, config=Config(spec_validator_cls=
None))`.

Three users:
- the sandbox asks `body_errors(...)` whether a request body is acceptable (cached schema validators);
- tests validate whole exchanges with `validate_request` / `validate_response` (httpx objects);
- `ValidatingTransport` / `SyncValidatingTransport` wrap an httpx transport and validate every exchange passing
  through, recording violations (or raising them) so a client test fails on any violation.

What the definition does not describe is checked against what docs/sandbox.md states instead: error statuses
the operation does not declare (400, 401, 403, 404, 405, 422, 429, 5xx) must carry the sandbox's error shape
`{"error": {"status": N, "message": "..."}}`, and a 429's `Retry-After`, when present, must be an integer >= 1
(Housecall Pro does not always send one).
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from openapi_core import OpenAPI

DEFINITION_FILE = Path(__file__).resolve().parent / "openapi" / "housecall.v1.yaml"
SERVER_URL = "https://api.housecallpro.com"
UNDESCRIBED_PATH = re.compile(r"^/_sandbox(/.*)?$")
ERROR_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 422, 429, 500, 502, 503, 504})
EXPECT_INVALID_REQUEST: dict[str, Any] = {"housecallpro_spec": "expect-invalid-request"}


class SpecViolation(AssertionError):
    """An exchange that Housecall Pro's definition does not allow; `errors` lists every failure found."""

    def __init__(self, kind: str, method: str, path: str, errors: list[str], status: int | None = None) -> None:
        self.kind = kind
        self.method = method.upper()
        self.path = path
        self.status = status
        self.errors = errors
        where = f"{self.method} {path}" + (f" -> {status}" if status is not None else "")
        super().__init__(f"{kind} {where} violates the Housecall Pro definition:\n  - " + "\n  - ".join(errors))


@dataclass(frozen=True)
class Operation:
    method: str  # lower case
    template: str  # e.g. /leads/{id}
    operation_id: str
    statuses: frozenset[str]


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("([^/]+)" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def _leaf_errors(error: Any) -> Iterator[Any]:
    if error.validator in ("oneOf", "anyOf", "allOf") and error.context:
        for sub in error.context:
            yield from _leaf_errors(sub)
    else:
        yield error


def schema_error_fields(errors: Iterable[Any]) -> dict[str, list[str]]:
    """jsonschema errors → `{"customer.addresses[0].zip": ["..."]}` (the sandbox's field names)."""
    fields: dict[str, list[str]] = {}
    for top in errors:
        for err in _leaf_errors(top):
            path = ""
            for seg in err.absolute_path:
                path += f"[{seg}]" if isinstance(seg, int) else ("." if path else "") + str(seg)
            if err.validator == "required":
                missing = str(err.message).split("'")[1] if "'" in str(err.message) else "?"
                name, msg = (f"{path}.{missing}" if path else missing), "is required"
            else:
                name, msg = path or "$", str(err.message)
            messages = fields.setdefault(name, [])
            if msg not in messages:
                messages.append(msg)
    return fields


def _describe(exc: BaseException) -> list[str]:
    cause = exc.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or getattr(exc, "schema_errors", None)
    head = f"{type(exc).__name__}: {exc}"
    if schema_errors:
        name = getattr(exc, "name", None)
        prefix = type(exc).__name__ + (f" ({name})" if name else "")
        return [
            f"{prefix}: {'/'.join(str(p) for p in err.absolute_path) or '$'}: {err.message}"
            for top in schema_errors
            for err in _leaf_errors(top)
        ]
    if cause is not None and str(cause) and str(cause) not in head:
        return [f"{head} ({type(cause).__name__}: {cause})"]
    return [head]


class _OpenAPIRequest:
    def __init__(self, request: httpx.Request, body: bytes | None) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = SERVER_URL
        self.path = request.url.path
        self.method = request.method.lower()
        self.body = body or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.items())),
        )


class _OpenAPIResponse:
    def __init__(self, status_code: int, headers: httpx.Headers, data: bytes) -> None:
        from werkzeug.datastructures import Headers

        self.status_code = status_code
        self.data = data
        self.content_type = headers.get("content-type", "")
        self.headers = Headers(list(headers.items()))


class Definitions:
    """Housecall Pro's definition, loaded once (thread-safe) and queried by path."""

    def __init__(self, path: Path = DEFINITION_FILE) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._api: OpenAPI | None = None
        self._operations: list[tuple[re.Pattern[str], Operation]] = []
        self._body_validators: dict[tuple[str, str], Any] = {}
        self._write_factory: Any = None

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def load(self) -> Definitions:
        if self._loaded.is_set():
            return self
        with self._lock:
            if self._loaded.is_set():
                return self
            import yaml
            from openapi_core import Config, OpenAPI
            from openapi_core.validation.schemas import oas30_write_schema_validators_factory

            self._write_factory = oas30_write_schema_validators_factory
            with self.path.open("rb") as fh:
                loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
                raw = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
            ops: list[tuple[re.Pattern[str], Operation]] = []
            for template, item in raw.get("paths", {}).items():
                for method, op in item.items():
                    if method in ("get", "post", "put", "patch", "delete"):
                        statuses = frozenset(str(s) for s in op.get("responses", {}))
                        ops.append(
                            (
                                _template_regex(template),
                                Operation(method, template, str(op.get("operationId")), statuses),
                            )
                        )
            ops.sort(key=lambda o: o[1].template.count("{"))  # literal segments first (/jobs/lock before /jobs/{id})
            self._operations = ops
            self._api = OpenAPI.from_file_path(str(self.path), config=Config(spec_validator_cls=None))
            self._loaded.set()
        return self

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    @property
    def api(self) -> OpenAPI:
        self.load()
        assert self._api is not None
        return self._api

    def find_operation(self, method: str, path: str) -> Operation | None:
        self.load()
        for regex, op in self._operations:
            if op.method == method.lower() and regex.match(path):
                return op
        return None

    # -- fast body validation (the sandbox's decision) ------------------------------------------
    def body_errors(self, method: str, template: str, body: Any) -> dict[str, list[str]]:
        """`{field: [message]}` for a request body the definition rejects ({} if accepted)."""
        key = (method.lower(), template)
        validator = self._body_validators.get(key)
        if validator is None:
            api = self.api
            schema = api.spec / "paths" / template / method.lower() / "requestBody" / "content"
            schema = schema / "application/json" / "schema"
            validator = self._write_factory.create(api.spec, schema).validator
            self._body_validators[key] = validator
        return schema_error_fields(validator.iter_errors(body))

    # -- full validation of httpx exchanges ------------------------------------------------------
    def request_errors(self, request: httpx.Request, body: bytes | None = None) -> list[str]:
        path = request.url.path
        if UNDESCRIBED_PATH.match(path):
            return []
        if self.find_operation(request.method, path) is None:
            return [f"no Housecall Pro operation describes {request.method} {path}"]
        errors: list[str] = []
        if not request.headers.get("authorization", "").startswith("Token "):
            errors.append("no `Authorization: Token <api-key>` header")
        openapi_request = _OpenAPIRequest(request, request.content if body is None else body)
        with warnings.catch_warnings():
            # openapi-core cannot check the definition's OAuth scheme and says so on every request; the sandbox
            # and the check above handle auth
            warnings.filterwarnings("ignore", message="Unsupported scheme type")
            errors.extend(line for exc in self.api.iter_request_errors(openapi_request) for line in _describe(exc))
        return errors

    def response_errors(self, request: httpx.Request, status: int, headers: httpx.Headers, body: bytes) -> list[str]:
        path = request.url.path
        if UNDESCRIBED_PATH.match(path):
            return []
        op = self.find_operation(request.method, path)
        if op is None:
            return [f"no Housecall Pro operation describes {request.method} {path}"]
        if str(status) not in op.statuses:
            if status in ERROR_STATUSES:
                return error_shape_errors(status, headers, body)
            return [f"status {status} is not declared for {op.method.upper()} {op.template} ({sorted(op.statuses)})"]
        errors: list[str] = []
        req = _OpenAPIRequest(request, request.content if _has_content(request) else None)
        for exc in self.api.iter_response_errors(req, _OpenAPIResponse(status, headers, body)):
            errors.extend(_describe(exc))
        return errors

    def validate_request(self, request: httpx.Request, body: bytes | None = None) -> None:
        errors = self.request_errors(request, body)
        if errors:
            raise SpecViolation("request", request.method, request.url.path, errors)

    def validate_response(self, request: httpx.Request, response: httpx.Response) -> None:
        errors = self.response_errors(request, response.status_code, response.headers, response.content)
        if errors:
            raise SpecViolation("response", request.method, request.url.path, errors, response.status_code)


def error_shape_errors(status: int, headers: httpx.Headers, body: bytes) -> list[str]:
    """Why an undeclared error answer is not the sandbox's documented error shape ([] if it is)."""
    errors: list[str] = []
    if status == 429 and "retry-after" in headers:
        value = headers["retry-after"]
        if not value.isdigit() or int(value) < 1:
            errors.append(f"429 with a Retry-After that is not an integer >= 1 ({value!r})")
    try:
        payload = json.loads(body)
    except ValueError:
        return [*errors, f"{status} body is not JSON"]
    inner = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(inner, dict) or inner.get("status") != status or not isinstance(inner.get("message"), str):
        errors.append(f"{status} body is not the error shape {{'error': {{'status': {status}, 'message': str}}}}")
    return errors


def _has_content(request: httpx.Request) -> bool:
    try:
        return bool(request.content)
    except httpx.RequestNotRead:
        return False


_DEFAULT: Definitions | None = None
_DEFAULT_LOCK = threading.Lock()


def get_definitions() -> Definitions:
    """The process-wide definition (loaded on first use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Definitions()
        return _DEFAULT


def validate_request(request: httpx.Request) -> None:
    get_definitions().validate_request(request)


def validate_response(request: httpx.Request, response: httpx.Response) -> None:
    get_definitions().validate_response(request, response)


# -- test hook: validating transports ------------------------------------------------------------


@dataclass
class _Recorder:
    definitions: Definitions
    raise_on_violation: bool
    violations: list[SpecViolation] = field(default_factory=list)
    exchanges: int = 0

    def check_request(self, request: httpx.Request, body: bytes) -> None:
        errors = self.definitions.request_errors(request, body)
        if request.extensions.get("housecallpro_spec") == EXPECT_INVALID_REQUEST["housecallpro_spec"]:
            if not errors and not UNDESCRIBED_PATH.match(request.url.path):
                self._record(
                    SpecViolation("request", request.method, request.url.path, ["marked invalid, but it validates"])
                )
        elif errors:
            self._record(SpecViolation("request", request.method, request.url.path, errors))

    def check_response(self, request: httpx.Request, status: int, headers: httpx.Headers, body: bytes) -> None:
        self.exchanges += 1
        errors = self.definitions.response_errors(request, status, headers, body)
        if errors:
            self._record(SpecViolation("response", request.method, request.url.path, errors, status))

    def _record(self, violation: SpecViolation) -> None:
        self.violations.append(violation)
        if self.raise_on_violation:
            raise violation

    def assert_clean(self) -> None:
        if self.violations:
            raise AssertionError(
                f"{len(self.violations)} exchange(s) violate the Housecall Pro definition:\n"
                + "\n".join(str(v) for v in self.violations)
            )


def _decoded_safe(response: httpx.Response, raw: bytes) -> bytes:
    try:
        return httpx.Response(response.status_code, headers=response.headers, content=raw).read()
    except httpx.DecodingError:
        return raw


class ValidatingTransport(httpx.AsyncBaseTransport):
    """Wraps an async httpx transport; validates every request and response against the definition.

    Violations are recorded in `.violations` (and raised as `SpecViolation` if `raise_on_violation`); call
    `assert_clean()` at the end of a test. `/_sandbox/*` is skipped. A request sent invalid on purpose carries
    `extensions=EXPECT_INVALID_REQUEST` (then it must be invalid; its response is still validated).
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        definitions: Definitions | None = None,
        raise_on_violation: bool = False,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self._rec = _Recorder(definitions or get_definitions(), raise_on_violation)

    @property
    def violations(self) -> list[SpecViolation]:
        return self._rec.violations

    @property
    def exchanges(self) -> int:
        return self._rec.exchanges

    def assert_clean(self) -> None:
        self._rec.assert_clean()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self._rec.check_request(request, body)
        response = await self.inner.handle_async_request(request)
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        self._rec.check_response(request, response.status_code, response.headers, _decoded_safe(response, raw))
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncValidatingTransport(httpx.BaseTransport):
    """`ValidatingTransport` for synchronous httpx clients."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        definitions: Definitions | None = None,
        raise_on_violation: bool = False,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self._rec = _Recorder(definitions or get_definitions(), raise_on_violation)

    @property
    def violations(self) -> list[SpecViolation]:
        return self._rec.violations

    @property
    def exchanges(self) -> int:
        return self._rec.exchanges

    def assert_clean(self) -> None:
        self._rec.assert_clean()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self._rec.check_request(request, body)
        response = self.inner.handle_request(request)
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        self._rec.check_response(request, response.status_code, response.headers, _decoded_safe(response, raw))
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
    "DEFINITION_FILE",
    "EXPECT_INVALID_REQUEST",
    "Definitions",
    "Operation",
    "SpecViolation",
    "SyncValidatingTransport",
    "ValidatingTransport",
    "get_definitions",
    "validate_request",
    "validate_response",
]
