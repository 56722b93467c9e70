"""Property-based fuzz run over the app's own OpenAPI document (the hypothesis stand-in for schemathesis; CI runs
it with the rest of the suite, derandomized, a bounded number of examples per operation).

For every operation the document declares (admin writes included), hypothesis generates path parameters, query
parameters and JSON bodies — half from the operation's schemas (valid-looking input, reaching the handlers), half
arbitrary JSON (reaching the validators: NUL and control characters, integers far beyond bigint, …) — and sends
them over real HTTP to the API on the test session's scratch database, with a real Dagster webserver and a real
sandbox behind it. Properties:

1. no answer is a 5xx, except the documented dependency answer: 503 from a health endpoint, whose JSON says
   which component is down;
2. every answer conforms to the published document: its status code is one the operation documents, and its
   JSON body validates against the documented schema for that status (`_conforms`);
3. without the token, every non-health operation answers 401, whatever the parameters and body.

Why not schemathesis itself: it would resolve against the locked dependencies (4.32.5 adds five packages and
accepts the locked hypothesis), but this run already covers its default checks (not_a_server_error,
status_code_conformance, response_schema_conformance) with generation that knows the domain (ids of the seeded
world, connections pointed at loopback so a generated connection test never leaves the machine), and needs no
new dependency.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from sqlalchemy import Engine

from integration_core.api.app import create_app
from integration_core.settings import HEALTH_COMPONENTS, Settings
from tests.support.api import serve_api
from tests.support.config import with_settings
from tests.support.dagster import DagsterHandle
from tests.support.sandbox import SandboxHandle
from tests.support.world import World, add_receiver, add_routings

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

# values that must not send the API to the internet when a generated connection is tested
PROPERTY_OVERRIDES: dict[str, Any] = {"base_url": "http://127.0.0.1:9", "environment": "sandbox"}
# values the schema cannot express (a GUID in a plain string; the health component names)
NAMED: dict[str, st.SearchStrategy[Any]] = {
    "external_data_guid": st.uuids().map(str) | st.none(),
    "name": st.sampled_from(HEALTH_COMPONENTS),
}


def _document() -> dict[str, Any]:
    return create_app(Settings(ENVIRONMENT="test")).openapi()


DOCUMENT = _document()
OPERATIONS = [
    (path, method, op)
    for path, item in sorted(DOCUMENT["paths"].items())
    for method, op in sorted(item.items())
    if method in {"get", "post", "put", "patch", "delete"}
]


def _ids(op: tuple[str, str, Any]) -> str:
    return f"{op[1].upper()} {op[0]}"


class Strategies:
    """JSON Schema (as FastAPI emits it) → hypothesis strategies."""

    def __init__(self, document: dict[str, Any], known_ids: list[str]) -> None:
        self.components = document.get("components", {}).get("schemas", {})
        self.known_ids = known_ids

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def for_schema(self, schema: dict[str, Any], depth: int = 0, name: str | None = None) -> st.SearchStrategy[Any]:
        if name in PROPERTY_OVERRIDES:
            return st.just(PROPERTY_OVERRIDES[name])
        if name == "external_data_guid":
            return NAMED[name]
        schema = self.resolve(schema)
        if depth > 6:
            return st.none()
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return st.one_of([self.for_schema(s, depth + 1, name) for s in schema[key]])
        if "allOf" in schema:
            return self.for_schema(schema["allOf"][0], depth + 1, name)
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            props = schema.get("properties", {})
            required = set(schema.get("required", []))
            fixed = {k: self.for_schema(v, depth + 1, k) for k, v in props.items() if k in required}
            optional = {k: self.for_schema(v, depth + 1, k) for k, v in props.items() if k not in required}
            return st.fixed_dictionaries(fixed, optional=optional)
        if kind == "array":
            items = self.for_schema(schema.get("items", {}), depth + 1)
            return st.lists(items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 3), 3))
        if kind == "string":
            fmt = schema.get("format")
            if fmt == "uuid":
                return st.sampled_from(self.known_ids) | st.uuids().map(str)
            if fmt == "email":
                return st.emails()
            if fmt == "date-time":
                return st.datetimes().map(lambda d: d.isoformat() + "Z")
            if "pattern" in schema:
                return st.from_regex(schema["pattern"], fullmatch=True)
            size = {"min_size": schema.get("minLength", 0), "max_size": min(schema.get("maxLength", 30), 30)}
            # mostly printable text (reaching the handlers), some of anything (NUL, control characters, …)
            printable = st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), **size)
            nul = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=5).map(lambda t: t + "\x00")
            return st.one_of(printable, printable, printable, st.text(**size), nul)
        if kind == "integer":
            lo = schema.get(
                "minimum", schema.get("exclusiveMinimum", -(2**64)) + (1 if "exclusiveMinimum" in schema else 0)
            )
            hi = schema.get("maximum", 2**64)  # beyond bigint too: refused at validation, never by the database
            edges = [v for v in (2**31, 2**63 - 1, 2**63, -(2**63) - 1) if lo <= v <= hi]
            return st.integers(min_value=lo, max_value=hi) | (st.sampled_from(edges) if edges else st.nothing())
        if kind == "number":
            return st.floats(
                min_value=schema.get("minimum", schema.get("exclusiveMinimum")),
                max_value=schema.get("maximum"),
                exclude_min="exclusiveMinimum" in schema,
                allow_nan=False,
                allow_infinity=False,
            )
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        return JSON

    def request(
        self, path: str, op: dict[str, Any]
    ) -> st.SearchStrategy[tuple[str, dict[str, Any], dict[str, str], Any]]:
        path_params = {}
        query: dict[str, st.SearchStrategy[Any]] = {}
        headers: dict[str, st.SearchStrategy[Any]] = {}
        for p in op.get("parameters", []):
            schema = p.get("schema", {})
            if p["in"] == "path":
                named = NAMED.get(p["name"], st.nothing())
                path_params[p["name"]] = (
                    named
                    # a "/" would make another path (or a redirect to one), not another value
                    | self.for_schema(schema).map(str).filter(lambda v: "/" not in v)
                    | st.text(
                        alphabet=st.characters(blacklist_characters="/?#%", blacklist_categories=["Cs"]),
                        min_size=1,
                        max_size=20,
                    )
                )
            elif p["in"] == "query":
                query[p["name"]] = self.for_schema(schema).map(_query_value) | st.text(max_size=10) | st.just("a\x00")
            elif p["in"] == "header" and p["name"].lower() != "authorization":
                headers[p["name"]] = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40)
        body: st.SearchStrategy[Any] = st.just(None)
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content:
            body = self.for_schema(content["schema"]) | JSON

        @st.composite
        def build(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, str], Any]:
            url = path
            for name, strategy in path_params.items():
                url = url.replace("{" + name + "}", quote(str(draw(strategy)), safe=""))
            params = draw(st.fixed_dictionaries({}, optional=query))
            extra = draw(st.fixed_dictionaries({}, optional=headers))
            return url, {k: v for k, v in params.items() if v is not None}, extra, draw(body)

        return build()


def _query_value(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


@pytest.fixture()
def world_api(
    db: Engine, world: World, settings: Settings, dagster_web: DagsterHandle, sandbox: SandboxHandle
) -> Iterator[tuple[httpx.Client, list[str]]]:
    """The API with every dependency up: a heartbeating Dagster, the sandbox, one healthy connection."""
    dagster_web.heartbeat()
    company, _ = add_receiver(db, sandbox)
    routings = add_routings(db, world, company, 3)
    s = with_settings(
        settings,
        dagster_webserver_url=dagster_web.url,
        servicetitan_sandbox_url=sandbox.url,
        health_check_timeout_seconds=2.0,
    )
    known = [str(company), str(world.referrer), str(world.technician), *map(str, routings)]
    with serve_api(db, s) as client:
        yield client, known


def _allowed(path: str, response: httpx.Response) -> bool:
    if response.status_code < 500:
        return True
    if response.status_code == 503 and path.startswith(("/api/health", "/api/admin/health")):
        return "status" in response.json()  # the documented answer: which component is down
    return False


_VALIDATORS: dict[str, Draft202012Validator] = {}


def _schema_errors(schema: dict[str, Any], body: Any) -> list[str]:
    """JSON Schema (2020-12, as OpenAPI 3.1) errors of `body` against `schema`, refs resolved in the document."""
    key = repr(schema)
    validator = _VALIDATORS.get(key)
    if validator is None:
        validator = Draft202012Validator({**schema, "components": DOCUMENT.get("components", {})})
        _VALIDATORS[key] = validator
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"[:300] for e in validator.iter_errors(body)][:5]


def _conforms(op: dict[str, Any], response: httpx.Response) -> list[str]:
    """Why the answer does not conform to the operation's documented responses (empty: it conforms)."""
    responses = op.get("responses", {})
    documented = responses.get(str(response.status_code)) or responses.get("default")
    if documented is None:
        return [f"status {response.status_code} is not documented (documented: {', '.join(sorted(responses))})"]
    schema = documented.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return []
    try:
        body = response.json()
    except ValueError:
        return [f"status {response.status_code}: the body is not JSON"]
    return _schema_errors(schema, body)


@pytest.mark.parametrize("operation", OPERATIONS, ids=_ids)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(data=st.data())
def test_no_5xx_and_answers_as_documented_on_any_operation(
    world_api: tuple[httpx.Client, list[str]], operation: Any, data: Any
) -> None:
    client, known = world_api
    path, method, op = operation
    url, params, headers, body = data.draw(Strategies(DOCUMENT, known).request(path, op))
    kwargs: dict[str, Any] = {"params": params, "headers": headers}
    if method in {"post", "put", "patch"}:
        kwargs["json"] = body
    r = client.request(method.upper(), url, **kwargs)
    event(f"HTTP {r.status_code}")
    assert _allowed(path, r), f"{method.upper()} {url} {params} {body!r} → {r.status_code} {r.text[:500]}"
    problems = _conforms(op, r)
    assert not problems, f"{method.upper()} {url} {params} {body!r} → {r.status_code} {r.text[:300]}: {problems}"


NON_HEALTH = [o for o in OPERATIONS if not o[0].startswith("/api/health")]


@pytest.mark.parametrize("operation", NON_HEALTH, ids=_ids)
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(data=st.data(), header=st.sampled_from([None, "Bearer wrong", "Basic dXNlcjpwdw==", "Bearer", "bearer x"]))
def test_every_non_health_operation_needs_the_token(api: str, operation: Any, data: Any, header: str | None) -> None:
    path, method, op = operation
    url, params, headers, body = data.draw(Strategies(DOCUMENT, [str(uuid.uuid4())]).request(path, op))
    headers = {**headers, "Authorization": header} if header else headers
    kwargs: dict[str, Any] = {"params": params, "headers": headers}
    if method in {"post", "put", "patch"}:
        kwargs["json"] = body
    r = httpx.request(method.upper(), api + url, timeout=30, **kwargs)
    assert r.status_code == 401, f"{method.upper()} {url} without a valid token → {r.status_code}"
    assert not _conforms(op, r), _conforms(op, r)


def test_the_document_covers_the_operator_surface() -> None:
    paths = set(DOCUMENT["paths"])
    for expected in (
        "/api/health/",
        "/api/health/component/{name}",
        "/api/admin/queue-stats",
        "/api/admin/clear-queues",
        "/api/admin/providers",
        "/api/admin/rate-limits",
        "/api/admin/companies",
        "/api/admin/companies/{company_id}/connection",
        "/api/routings/{routing_id}/retry",
        "/api/routings/retry",
        "/api/routings/{routing_id}/dry-run",
    ):
        assert expected in paths
    assert len(NON_HEALTH) == len(OPERATIONS) - 2
    # every protected operation declares the bearer scheme (the provider webhooks are signed instead)
    for path, _method, op in NON_HEALTH:
        assert op.get("security") or path.startswith("/webhooks/"), path
    assert re.fullmatch(r"\d+\.\d+\.\d+", DOCUMENT["openapi"])


def test_the_document_lists_the_error_answers_of_every_operation() -> None:
    """401 where the token is required, 404 where a path names a record, 413 and 422 where a body is taken; each
    with its JSON schema (`ErrorOut`, FastAPI's `HTTPValidationError`)."""
    for path, method, op in OPERATIONS:
        answers = op["responses"]
        name = f"{method.upper()} {path}"
        if op.get("security"):
            assert answers["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            assert "content" in answers["404"], name
        if "requestBody" in op:
            assert "content" in answers["413"] and "422" in answers, name
        if op.get("parameters") or "requestBody" in op:
            assert "422" in answers, name
    public = DOCUMENT["paths"]["/api/health/"]["get"]["responses"]
    assert "401" not in public
    assert set(DOCUMENT["components"]["schemas"]["PublicHealth"]["properties"]) == {"status", "components"}


def test_the_conformance_check_catches_what_it_should() -> None:
    op = DOCUMENT["paths"]["/api/admin/providers"]["get"]
    assert not _conforms(op, httpx.Response(401, json={"detail": "invalid API token"}))
    assert _conforms(op, httpx.Response(418, json={"detail": "x"}))  # not documented
    assert _conforms(op, httpx.Response(401, json={"error": "x"}))  # not an ErrorOut
    assert _conforms(op, httpx.Response(200, json=[{"id": "not a connection"}]))  # not the documented list
