"""integration_core.operations.dagster_client against the real Dagster GraphQL schema and a real webserver."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from integration_core.local.http_server import serve_in_thread
from integration_core.operations.dagster_client import DOCUMENTS, DagsterClient, DagsterUnavailable
from tests.support.config import DEAD_URL
from tests.support.dagster import DagsterHandle

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_every_document_is_valid_against_the_installed_dagster_graphql_schema(name: str) -> None:
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    assert validate(create_schema().graphql_schema, parse(DOCUMENTS[name])) == []


def test_integration_core_never_imports_dagster() -> None:
    offenders = []
    for path in (ROOT / "integration_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert offenders == []


def test_queue_counts_list_and_cancel_against_a_real_webserver(dagster_web: DagsterHandle) -> None:
    client = DagsterClient(dagster_web.url, timeout=30)
    a = dagster_web.queue_run("company-a", tenant="1001")
    b = dagster_web.queue_run("company-b", tenant="1002")
    started = dagster_web.start_run("company-c")

    counts = client.run_counts()
    assert (counts.queued, counts.in_progress) == (2, 1)
    queued = {r.run_id: r for r in client.queued_runs()}
    assert set(queued) == {a, b}
    assert queued[a].partition == "company-a" and queued[a].tags["tenant"] == "1001"
    assert queued[a].status == "QUEUED" and queued[a].job_name == "fsm_deliveries_job" and queued[a].created_at

    queued_runs, result = client.cancel_queued_runs()
    assert {r.run_id for r in queued_runs} == {a, b}
    assert sorted(result.cancelled) == sorted([a, b]) and result.failed == {}
    assert dagster_web.run_status(a) == "CANCELED" and dagster_web.run_status(started) == "STARTED"
    assert client.run_counts().queued == 0


def test_terminate_reports_runs_it_could_not_cancel(dagster_web: DagsterHandle) -> None:
    client = DagsterClient(dagster_web.url, timeout=30)
    result = client.terminate_runs(["no-such-run"])
    assert result.cancelled == [] and "no-such-run" in result.failed
    assert client.terminate_runs([]).cancelled == []


def test_daemon_health_reflects_heartbeats(dagster_web: DagsterHandle) -> None:
    client = DagsterClient(dagster_web.url, timeout=30)
    statuses = client.daemon_statuses()
    assert statuses and all(s.healthy is False and s.last_heartbeat_at is None for s in statuses if s.required)
    dagster_web.heartbeat()
    statuses = client.daemon_statuses()
    assert all(s.healthy and s.last_heartbeat_at is not None for s in statuses if s.required)
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= {s.daemon_type for s in statuses}


def test_unreachable_webserver_is_dagster_unavailable() -> None:
    with pytest.raises(DagsterUnavailable, match="cannot reach"):
        DagsterClient(DEAD_URL).run_counts()


def _misbehaving() -> FastAPI:
    app = FastAPI()

    @app.post("/graphql")
    async def graphql(request: Request) -> object:
        query = (await request.json())["query"]
        if "SiRunCounts" in query:
            return PlainTextResponse("upstream exploded", status_code=502)
        if "SiDaemonHealth" in query:
            return JSONResponse({"errors": [{"message": "Cannot query field 'daemonHealth'"}]})
        if "SiRuns" in query:
            return JSONResponse({"data": {"runsOrError": {"__typename": "PythonError", "message": "boom"}}})
        return PlainTextResponse("not json")

    return app


def test_errors_and_odd_answers_are_dagster_unavailable_with_a_reason() -> None:
    with serve_in_thread(_misbehaving()) as url:
        client = DagsterClient(url)
        with pytest.raises(DagsterUnavailable, match="HTTP 502"):
            client.run_counts()
        with pytest.raises(DagsterUnavailable, match="GraphQL error: Cannot query field"):
            client.daemon_statuses()
        with pytest.raises(DagsterUnavailable, match="PythonError: boom"):
            client.queued_runs()
        with pytest.raises(DagsterUnavailable, match="did not answer JSON"):
            client.terminate_runs(["x"])
