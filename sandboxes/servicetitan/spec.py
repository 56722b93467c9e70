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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from sandboxes.common import spec as common

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


class SpecViolation(common.SpecViolation):
    """An exchange that ServiceTitan's definitions do not allow; `errors` lists every failure found."""

    subject = "the ServiceTitan definitions"


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


def schema_error_fields(errors: Iterable[Any]) -> dict[str, list[str]]:
    """jsonschema `ValidationError`s → ServiceTitan's `errors` map `{Field: [message]}`."""
    fields: dict[str, list[str]] = {}
    for top in errors:
        for err in common.leaf_errors(top):
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


def _request(request: httpx.Request, body: bytes | None) -> common.OpenAPIRequest:
    return common.OpenAPIRequest(SERVER_URL, request, body)


@dataclass
class _Module:
    name: str
    raw: dict[str, Any]
    operations: list[tuple[re.Pattern[str], Operation]]
    api: OpenAPI | None = None


class Definitions(common.ValidatesExchanges):
    """The six ServiceTitan definitions, loaded once (thread-safe) and queried by path."""

    violation = SpecViolation

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
                                common.template_regex(template),
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
        for exc in api.iter_request_errors(_request(request, body)):
            errors.extend(common.describe(exc))
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
        req = _request(request, request.content if common.has_content(request) else None)
        errors: list[str] = []
        for exc in api.iter_response_errors(req, common.OpenAPIResponse(status, headers, body)):
            errors.extend(common.describe(exc))
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


PROFILE = common.SpecProfile(
    violation=SpecViolation,
    expect_invalid=("servicetitan_spec", EXPECT_INVALID_REQUEST["servicetitan_spec"]),
    undescribed_path=UNDESCRIBED_PATH,
    default_definitions=get_definitions,
)


class ValidatingTransport(common.ValidatingTransport):
    """Wraps an async httpx transport; validates every request and response against the definitions.

    Violations are recorded in `.violations` (and raised as `SpecViolation` only if `raise_on_violation`).
    Skipped: `/connect/token`, `/_sandbox/*`; bodies of 401/403/429/5xx (the definitions do not describe
    them) — but 401/403/429 must carry ServiceTitan's error shape and a 429 an integer `Retry-After`.
    Unknown query parameters are never a violation (ServiceTitan ignores them).
    """

    profile = PROFILE


class SyncValidatingTransport(common.SyncValidatingTransport):
    """`ValidatingTransport` for synchronous httpx clients."""

    profile = PROFILE


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
