"""ServiceTitan's own OpenAPI definitions: loading, lookup and validation of traffic against them.

The six definitions (CRM, JPM, settings, marketing, dispatch, accounting; snapshot of Dec 2024) ship with the
package under `openapi/`. They are not strictly valid OpenAPI (a duplicated enum value), so the definition
itself is never validated: `OpenAPI.from_file_path(path, config=Config(spec_validator_cls=None))`.

Three users:
- the sandbox asks `body_errors(...)` whether a request body is acceptable (cached schema validators, ~0.5 ms);
- tests validate whole exchanges with `validate_request` / `validate_response` (httpx objects), which run
  openapi-core's full validation (security, parameters, body; status and body of the response);
- `ValidatingTransport` / `SyncValidatingTransport` wrap an httpx transport and validate every exchange
  passing through, recording violations instead of failing the call.

`openapi_core` is slow to import (~1.5 s), so it is imported lazily: importing this module is cheap, and
`Definitions.load()` can run in a background thread while a server is already accepting connections.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from openapi_core import OpenAPI

DEFINITIONS_DIR = Path(__file__).resolve().parent / "openapi"
SERVER_URL = "https://api.servicetitan.io"
MODULE_FILES: dict[str, str] = {
    "crm": "tenant-crm-v2.yml",
    "jpm": "tenant-jpm-v2.yml",
    "settings": "tenant-settings-v2.yml",
    "marketing": "tenant-marketing-v2.yml",
    "dispatch": "tenant-dispatch-v2.yml",
    "accounting": "tenant-accounting-v2.yml",
}
# Paths that are ServiceTitan's (or the sandbox's) but not described by the tenant-API definitions.
UNDESCRIBED_PATH = re.compile(r"^/(connect/token|_sandbox(/.*)?)$")
# Statuses whose bodies the definitions do not describe; their error shape is checked separately.
UNDESCRIBED_STATUSES = frozenset({401, 403, 429, 500, 502, 503, 504})
ERROR_SHAPE_STATUSES = frozenset({401, 403, 429})

# Request extension a test sets on a request it sends invalid on purpose (`extensions=EXPECT_INVALID_REQUEST`):
# the validating transports then require the request to be invalid, and still validate the response.
EXPECT_INVALID_REQUEST: dict[str, Any] = {"servicetitan_spec": "expect-invalid-request"}


class SpecViolation(AssertionError):
    """An exchange that ServiceTitan's definitions do not allow; `errors` lists every failure found."""

    def __init__(self, kind: str, method: str, path: str, errors: list[str], status: int | None = None) -> None:
        self.kind = kind  # "request" | "response"
        self.method = method.upper()
        self.path = path
        self.status = status
        self.errors = errors
        where = f"{self.method} {path}" + (f" -> {status}" if status is not None else "")
        super().__init__(f"{kind} {where} violates the ServiceTitan definitions:\n  - " + "\n  - ".join(errors))


@dataclass(frozen=True)
class Operation:
    module: str
    method: str  # lower case
    template: str  # e.g. /crm/v2/tenant/{tenant}/customers
    operation_id: str
    statuses: frozenset[str]


def module_for_path(path: str) -> str | None:
    """`/crm/...` → "crm", `/jpm/...` → "jpm", ...; None for paths outside the six definitions."""
    head = path.lstrip("/").split("/", 1)[0]
    return head if head in MODULE_FILES else None


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    pattern = "".join("([^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}$")


def _pascal(segment: str) -> str:
    return segment[:1].upper() + segment[1:]


def field_name(path: Iterable[Any]) -> str:
    """A JSON path as ServiceTitan (ASP.NET) names fields in `errors`: `Contacts[0].Type`."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + _pascal(str(seg))
    return out


def _leaf_errors(error: Any) -> Iterator[Any]:
    """jsonschema errors, descending through `oneOf`/`anyOf` wrappers to the errors that explain them."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        for sub in error.context:
            yield from _leaf_errors(sub)
    else:
        yield error


def schema_error_fields(errors: Iterable[Any]) -> dict[str, list[str]]:
    """jsonschema `ValidationError`s → ServiceTitan's `errors` map `{Field: [message]}`."""
    fields: dict[str, list[str]] = {}
    for top in errors:
        for err in _leaf_errors(top):
            path = list(err.absolute_path)
            if err.validator == "required":
                missing = str(err.message).split("'")[1] if "'" in str(err.message) else "?"
                name = field_name([*path, missing])
                msg = f"The {_pascal(missing)} field is required."
            elif err.validator == "additionalProperties":
                extra = re.findall(r"'([^']+)'", str(err.message))
                name = field_name([*path, extra[0]]) if extra else field_name(path) or "$"
                msg = f"Could not find member '{extra[0] if extra else '?'}' on the request object."
            elif err.validator == "enum":
                allowed = ", ".join(dict.fromkeys(str(v) for v in err.validator_value))
                name = field_name(path) or "$"
                msg = f"The value '{err.instance}' is not valid. Allowed values: {allowed}."
            elif err.validator == "type":
                name = field_name(path) or "$"
                msg = f"The JSON value could not be converted to {err.validator_value}."
            else:
                name = field_name(path) or "$"
                msg = str(err.message)
            messages = fields.setdefault(name, [])
            if msg not in messages:
                messages.append(msg)
    return fields


def _describe(exc: BaseException) -> list[str]:
    """Readable lines for an openapi-core validation exception (with every schema error it carries)."""
    lines: list[str] = []
    cause = exc.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or getattr(exc, "schema_errors", None)
    head = f"{type(exc).__name__}: {exc}"
    if schema_errors:
        name = getattr(exc, "name", None)
        prefix = f"{type(exc).__name__}" + (f" ({name})" if name else "")
        for top in schema_errors:
            for err in _leaf_errors(top):
                loc = "/".join(str(p) for p in err.absolute_path) or "$"
                lines.append(f"{prefix}: {loc}: {err.message}")
    elif cause is not None and str(cause) and str(cause) not in head:
        lines.append(f"{head} ({type(cause).__name__}: {cause})")
    else:
        lines.append(head)
    return lines


class _OpenAPIRequest:
    """An httpx.Request seen through openapi-core's Request protocol (host pinned to the definitions' server)."""

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


@dataclass
class _Module:
    name: str
    raw: dict[str, Any]
    operations: list[tuple[re.Pattern[str], Operation]]
    api: OpenAPI | None = None


class Definitions:
    """The six ServiceTitan definitions, loaded once (thread-safe) and queried by path."""

    def __init__(self, directory: Path = DEFINITIONS_DIR) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._modules: dict[str, _Module] = {}
        self._loaded = threading.Event()
        self._body_validators: dict[tuple[str, str], Any] = {}
        self._error_validator: Any = None

    # -- loading ---------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def load(self) -> Definitions:
        """Parse all six definitions and build openapi-core objects (idempotent, ~2 s the first time)."""
        if self._loaded.is_set():
            return self
        with self._lock:
            if self._loaded.is_set():
                return self
            import yaml
            from openapi_core import Config, OpenAPI
            from openapi_core.validation.schemas import oas30_write_schema_validators_factory

            self._write_factory = oas30_write_schema_validators_factory
            for module, filename in MODULE_FILES.items():
                path = self.directory / filename
                with path.open("rb") as fh:
                    raw = yaml.load(fh, Loader=yaml.CSafeLoader) if hasattr(yaml, "CSafeLoader") else yaml.safe_load(fh)
                ops: list[tuple[re.Pattern[str], Operation]] = []
                for template, item in raw.get("paths", {}).items():
                    for method, op in item.items():
                        if method not in ("get", "post", "put", "patch", "delete"):
                            continue
                        ops.append(
                            (
                                _template_regex(template),
                                Operation(
                                    module=module,
                                    method=method,
                                    template=template,
                                    operation_id=str(op.get("operationId", "")),
                                    statuses=frozenset(str(s) for s in op.get("responses", {})),
                                ),
                            )
                        )
                # Literal segments beat parameters (`/customers/contacts` before `/customers/{id}`).
                ops.sort(key=lambda o: o[1].template.count("{"))
                api = OpenAPI.from_file_path(str(path), config=Config(spec_validator_cls=None))
                self._modules[module] = _Module(module, raw, ops, api)
            self._loaded.set()
        return self

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    def _module(self, name: str) -> _Module:
        self.load()
        return self._modules[name]

    def openapi(self, module: str) -> OpenAPI:
        api = self._module(module).api
        assert api is not None
        return api

    # -- lookup ----------------------------------------------------------------------------------
    def find_operation(self, method: str, path: str) -> Operation | None:
        module = module_for_path(path)
        if module is None:
            return None
        for regex, op in self._module(module).operations:
            if op.method == method.lower() and regex.match(path):
                return op
        return None

    def has_path(self, path: str) -> bool:
        module = module_for_path(path)
        return module is not None and any(r.match(path) for r, _ in self._module(module).operations)

    # -- fast body validation (the sandbox's decision) ------------------------------------------
    def body_errors(self, module: str, method: str, template: str, body: Any) -> dict[str, list[str]]:
        """ServiceTitan-style `{Field: [message]}` for a request body the definition rejects ({} if accepted)."""
        key = (method.lower(), template)
        validator = self._body_validators.get(key)
        if validator is None:
            mod = self._module(module)
            assert mod.api is not None
            schema = mod.api.spec / "paths" / template / method.lower() / "requestBody" / "content"
            schema = schema / "application/json" / "schema"
            validator = self._write_factory.create(mod.api.spec, schema).validator
            self._body_validators[key] = validator
        return schema_error_fields(validator.iter_errors(body))

    def error_shape_errors(self, payload: Any) -> list[str]:
        """Why `payload` is not ServiceTitan's `ApiErrorResponse` ([] if it is)."""
        if self._error_validator is None:
            from openapi_core.validation.schemas import oas30_read_schema_validators_factory

            api = self.openapi("crm")
            schema = api.spec / "components" / "schemas" / "ApiErrorResponse"
            self._error_validator = oas30_read_schema_validators_factory.create(api.spec, schema).validator
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '$'}: {e.message}"
            for e in self._error_validator.iter_errors(payload)
        ]

    # -- full validation of httpx exchanges ------------------------------------------------------
    def request_errors(self, request: httpx.Request, body: bytes | None = None) -> list[str]:
        """Every way `request` violates the definitions ([] if valid, or if its path is not described)."""
        path = request.url.path
        if UNDESCRIBED_PATH.match(path):
            return []
        module = module_for_path(path)
        if module is None or not self.has_path(path):
            return [f"no ServiceTitan definition describes {request.method} {path}"]
        if body is None:
            body = request.content
        api = self.openapi(module)
        errors: list[str] = []
        for exc in api.iter_request_errors(_OpenAPIRequest(request, body)):
            errors.extend(_describe(exc))
        return errors

    def response_errors(self, request: httpx.Request, status: int, headers: httpx.Headers, body: bytes) -> list[str]:
        """Every way the response violates the definitions ([] if valid or not described by them)."""
        path = request.url.path
        if UNDESCRIBED_PATH.match(path):
            return []
        module = module_for_path(path)
        if module is None or not self.has_path(path):
            return [f"no ServiceTitan definition describes {request.method} {path}"]
        if status in UNDESCRIBED_STATUSES:
            return self._undescribed_status_errors(status, headers, body)
        api = self.openapi(module)
        req = _OpenAPIRequest(request, request.content if _has_content(request) else None)
        errors: list[str] = []
        for exc in api.iter_response_errors(req, _OpenAPIResponse(status, headers, body)):
            errors.extend(_describe(exc))
        return errors

    def _undescribed_status_errors(self, status: int, headers: httpx.Headers, body: bytes) -> list[str]:
        errors: list[str] = []
        if status == 429:
            retry_after = headers.get("retry-after", "")
            if not retry_after.isdigit() or int(retry_after) < 1:
                errors.append(f"429 without an integer Retry-After >= 1 (got {retry_after!r})")
        if status in ERROR_SHAPE_STATUSES and (body.strip() or status == 429):
            try:
                payload = json.loads(body)
            except ValueError:
                return [*errors, f"{status} body is not JSON"]
            errors.extend(
                f"{status} body is not ServiceTitan's error shape: {e}" for e in self.error_shape_errors(payload)
            )
            if isinstance(payload, dict) and payload.get("status") != status:
                errors.append(f"{status} body has status {payload.get('status')!r}")
        return errors

    def validate_request(self, request: httpx.Request, body: bytes | None = None) -> None:
        errors = self.request_errors(request, body)
        if errors:
            raise SpecViolation("request", request.method, request.url.path, errors)

    def validate_response(self, request: httpx.Request, response: httpx.Response) -> None:
        errors = self.response_errors(request, response.status_code, response.headers, response.content)
        if errors:
            raise SpecViolation("response", request.method, request.url.path, errors, response.status_code)


def _has_content(request: httpx.Request) -> bool:
    try:
        return bool(request.content)
    except httpx.RequestNotRead:
        return False


_DEFAULT: Definitions | None = None
_DEFAULT_LOCK = threading.Lock()


def get_definitions() -> Definitions:
    """The process-wide definitions (loaded on first use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Definitions()
        return _DEFAULT


def validate_request(request: httpx.Request) -> None:
    """Raise `SpecViolation` listing every way `request` violates ServiceTitan's definitions."""
    get_definitions().validate_request(request)


def validate_response(request: httpx.Request, response: httpx.Response) -> None:
    """Raise `SpecViolation` listing every way `response` (to `request`) violates the definitions."""
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
        expect_invalid = request.extensions.get("servicetitan_spec") == EXPECT_INVALID_REQUEST["servicetitan_spec"]
        if expect_invalid:
            if not errors and not UNDESCRIBED_PATH.match(request.url.path):
                self._record(
                    SpecViolation(
                        "request",
                        request.method,
                        request.url.path,
                        ["marked invalid on purpose, but it validates"],
                    )
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
                f"{len(self.violations)} exchange(s) violate the ServiceTitan definitions:\n"
                + "\n".join(str(v) for v in self.violations)
            )


def _decoded(status: int, headers: httpx.Headers, raw: bytes) -> bytes:
    return httpx.Response(status, headers=headers, content=raw).read()


class ValidatingTransport(httpx.AsyncBaseTransport):
    """Wraps an async httpx transport; validates every request and response against the definitions.

    Violations are recorded in `.violations` (and raised as `SpecViolation` only if `raise_on_violation`).
    Skipped: `/connect/token`, `/_sandbox/*`; bodies of 401/403/429/5xx (the definitions do not describe
    them) — but 401/403/429 must carry ServiceTitan's error shape and a 429 an integer `Retry-After`.
    Unknown query parameters are never a violation (ServiceTitan ignores them).
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
        """Responses validated so far."""
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


def _decoded_safe(response: httpx.Response, raw: bytes) -> bytes:
    try:
        return _decoded(response.status_code, response.headers, raw)
    except httpx.DecodingError:
        return raw


__all__ = [
    "DEFINITIONS_DIR",
    "EXPECT_INVALID_REQUEST",
    "MODULE_FILES",
    "Definitions",
    "Operation",
    "SpecViolation",
    "SyncValidatingTransport",
    "ValidatingTransport",
    "get_definitions",
    "module_for_path",
    "validate_request",
    "validate_response",
]
