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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from sandboxes.common import spec as common

if TYPE_CHECKING:
    from openapi_core import OpenAPI

DEFINITION_FILE = Path(__file__).resolve().parent / "openapi" / "housecall.v1.yaml"
SERVER_URL = "https://api.housecallpro.com"
UNDESCRIBED_PATH = re.compile(r"^/_sandbox(/.*)?$")
ERROR_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 422, 429, 500, 502, 503, 504})
EXPECT_INVALID_REQUEST: dict[str, Any] = {"housecallpro_spec": "expect-invalid-request"}


class SpecViolation(common.SpecViolation):
    """An exchange that Housecall Pro's definition does not allow; `errors` lists every failure found."""

    subject = "the Housecall Pro definition"


@dataclass(frozen=True)
class Operation:
    method: str  # lower case
    template: str  # e.g. /leads/{id}
    operation_id: str
    statuses: frozenset[str]


_WRAPPERS = ("oneOf", "anyOf", "allOf")  # Housecall Pro's schemas compose with allOf too


def _leaf_errors(error: Any) -> Iterator[Any]:
    return common.leaf_errors(error, _WRAPPERS)


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
    return common.describe(exc, _WRAPPERS)


def _request(request: httpx.Request, body: bytes | None) -> common.OpenAPIRequest:
    return common.OpenAPIRequest(SERVER_URL, request, body)


class Definitions(common.ValidatesExchanges):
    """Housecall Pro's definition, loaded once (thread-safe) and queried by path."""

    violation = SpecViolation

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
                                common.template_regex(template),
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
        openapi_request = _request(request, request.content if body is None else body)
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
        req = _request(request, request.content if common.has_content(request) else None)
        for exc in self.api.iter_response_errors(req, common.OpenAPIResponse(status, headers, body)):
            errors.extend(_describe(exc))
        return errors


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


PROFILE = common.SpecProfile(
    violation=SpecViolation,
    expect_invalid=("housecallpro_spec", EXPECT_INVALID_REQUEST["housecallpro_spec"]),
    undescribed_path=UNDESCRIBED_PATH,
    default_definitions=get_definitions,
)


class ValidatingTransport(common.ValidatingTransport):
    """Wraps an async httpx transport; validates every request and response against the definition.

    Violations are recorded in `.violations` (and raised as `SpecViolation` if `raise_on_violation`); call
    `assert_clean()` at the end of a test. `/_sandbox/*` is skipped. A request sent invalid on purpose carries
    `extensions=EXPECT_INVALID_REQUEST` (then it must be invalid; its response is still validated).
    """

    profile = PROFILE


class SyncValidatingTransport(common.SyncValidatingTransport):
    """`ValidatingTransport` for synchronous httpx clients."""

    profile = PROFILE


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
