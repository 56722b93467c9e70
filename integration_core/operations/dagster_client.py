"""A small client for the Dagster webserver's GraphQL API (httpx only: `integration_core` never imports dagster).

The HTTP API and the CLI use it to see the daemon's heartbeats and the run queue, and to cancel queued runs.
Every failure to reach Dagster, or an answer that is not what the schema promises, raises
:class:`DagsterUnavailable` with a short, safe reason; callers turn that into a clear "dagster unavailable"
answer, never a 500.

Field names are those of dagster-graphql 1.13 (`dagster_graphql/schema/`): `instance.daemonHealth.
allDaemonStatuses`, `runsOrError(filter: RunsFilter, limit)` → `Runs { results count }`, and the
`terminateRuns(runIds, terminatePolicy)` mutation. Terminating a QUEUED run cancels it (the queued run
coordinator removes it from the queue; nothing was launched). `tests/test_dagster_client.py` validates every
document below against the installed schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from integration_core.settings import Settings

__all__ = [
    "IN_PROGRESS_STATUSES",
    "QUEUED_STATUSES",
    "DaemonStatus",
    "DagsterClient",
    "DagsterUnavailable",
    "RunCounts",
    "RunInfo",
    "TerminateResult",
]

QUEUED_STATUSES = ("QUEUED",)
IN_PROGRESS_STATUSES = ("STARTING", "STARTED")

DAEMON_HEALTH_QUERY = """
query SiDaemonHealth {
  instance {
    daemonHealth {
      allDaemonStatuses { daemonType required healthy lastHeartbeatTime }
    }
  }
}
"""

RUN_COUNTS_QUERY = """
query SiRunCounts($queued: [RunStatus!], $inProgress: [RunStatus!]) {
  queued: runsOrError(filter: {statuses: $queued}) {
    __typename
    ... on Runs { count }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
  inProgress: runsOrError(filter: {statuses: $inProgress}) {
    __typename
    ... on Runs { count }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
"""

RUNS_QUERY = """
query SiRuns($statuses: [RunStatus!], $limit: Int) {
  runsOrError(filter: {statuses: $statuses}, limit: $limit) {
    __typename
    ... on Runs {
      count
      results { runId jobName status creationTime tags { key value } }
    }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
"""

TERMINATE_RUNS_MUTATION = """
mutation SiTerminateRuns($runIds: [String!]!) {
  terminateRuns(runIds: $runIds, terminatePolicy: SAFE_TERMINATE) {
    __typename
    ... on TerminateRunsResult {
      terminateRunResults {
        __typename
        ... on TerminateRunSuccess { run { runId status } }
        ... on TerminateRunFailure { run { runId status } message }
        ... on RunNotFoundError { runId message }
        ... on UnauthorizedError { message }
        ... on PythonError { message }
      }
    }
    ... on PythonError { message }
  }
}
"""

DOCUMENTS = {
    "daemon_health": DAEMON_HEALTH_QUERY,
    "run_counts": RUN_COUNTS_QUERY,
    "runs": RUNS_QUERY,
    "terminate_runs": TERMINATE_RUNS_MUTATION,
}


class DagsterUnavailable(RuntimeError):
    """Dagster's webserver could not be reached or did not answer as expected. `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"dagster unavailable: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class DaemonStatus:
    daemon_type: str
    required: bool
    healthy: bool | None
    last_heartbeat_at: datetime | None


@dataclass(frozen=True)
class RunCounts:
    queued: int
    in_progress: int


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    job_name: str
    status: str
    created_at: datetime | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def partition(self) -> str | None:
        """The run's partition: a company's partition key (`bright-spark-electric-3f2a`; a bare company id for
        partitions from before migration 0005), or a day of the daily reports."""
        return self.tags.get("dagster/partition")

    @property
    def company_id(self) -> str | None:
        """The receiving company of a delivery run (tag `si/company_id`, set on every delivery run)."""
        return self.tags.get("si/company_id")


@dataclass(frozen=True)
class TerminateResult:
    cancelled: list[str] = field(default_factory=list)
    # run id → Dagster's reason (e.g. the run was launched meanwhile and is no longer cancellable)
    failed: dict[str, str] = field(default_factory=dict)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    return None


class DagsterClient:
    """Synchronous GraphQL client for one Dagster webserver (`DAGSTER_WEBSERVER_URL`)."""

    def __init__(self, base_url: str, *, timeout: float = 3.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = f"{self.base_url}/graphql"
        self._timeout = timeout
        self._transport = transport

    @classmethod
    def from_settings(cls, settings: Settings) -> DagsterClient:
        return cls(settings.dagster_url, timeout=settings.dagster_timeout_seconds)

    def __repr__(self) -> str:
        return f"DagsterClient({self.base_url!r})"

    def execute(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST one GraphQL document; returns `data`. Raises DagsterUnavailable on any transport or GraphQL error."""
        try:
            with httpx.Client(timeout=self._timeout, transport=self._transport) as http:
                response = http.post(self.endpoint, json={"query": document, "variables": variables or {}})
        except httpx.TimeoutException:
            raise DagsterUnavailable(f"no answer from {self.base_url} within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise DagsterUnavailable(f"cannot reach {self.base_url} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise DagsterUnavailable(f"{self.endpoint} answered HTTP {response.status_code}")
        try:
            payload = response.json()
        except ValueError:
            raise DagsterUnavailable(f"{self.endpoint} did not answer JSON") from None
        if not isinstance(payload, dict):
            raise DagsterUnavailable(f"{self.endpoint} answered an unexpected shape")
        errors = payload.get("errors")
        if errors:
            first = errors[0].get("message", "") if isinstance(errors[0], dict) else str(errors[0])
            raise DagsterUnavailable(f"GraphQL error: {str(first)[:200]}")
        data = payload.get("data")
        if not isinstance(data, dict):
            raise DagsterUnavailable(f"{self.endpoint} answered without data")
        return data

    # --- reads ------------------------------------------------------------------------------------------------

    def daemon_statuses(self) -> list[DaemonStatus]:
        data = self.execute(DAEMON_HEALTH_QUERY)
        try:
            statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
            return [
                DaemonStatus(
                    daemon_type=str(s["daemonType"]),
                    required=bool(s.get("required", True)),
                    healthy=s.get("healthy"),
                    last_heartbeat_at=_timestamp(s.get("lastHeartbeatTime")),
                )
                for s in statuses
            ]
        except (KeyError, TypeError) as exc:
            raise DagsterUnavailable(f"unexpected daemonHealth answer ({type(exc).__name__})") from None

    @staticmethod
    def _runs(node: Any, what: str) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise DagsterUnavailable(f"unexpected runsOrError answer for {what}")
        if node.get("__typename") != "Runs":
            raise DagsterUnavailable(f"{what}: {node.get('__typename')}: {str(node.get('message', ''))[:200]}")
        return node

    def run_counts(self) -> RunCounts:
        data = self.execute(
            RUN_COUNTS_QUERY, {"queued": list(QUEUED_STATUSES), "inProgress": list(IN_PROGRESS_STATUSES)}
        )
        try:
            return RunCounts(
                queued=int(self._runs(data.get("queued"), "queued runs")["count"]),
                in_progress=int(self._runs(data.get("inProgress"), "runs in progress")["count"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DagsterUnavailable(f"unexpected run count answer ({type(exc).__name__})") from None

    def runs(self, statuses: tuple[str, ...] = QUEUED_STATUSES, *, limit: int = 1000) -> list[RunInfo]:
        data = self.execute(RUNS_QUERY, {"statuses": list(statuses), "limit": limit})
        node = self._runs(data.get("runsOrError"), "runs")
        try:
            return [
                RunInfo(
                    run_id=str(r["runId"]),
                    job_name=str(r["jobName"]),
                    status=str(r["status"]),
                    created_at=_timestamp(r.get("creationTime")),
                    tags={str(t["key"]): str(t["value"]) for t in r.get("tags") or []},
                )
                for r in node["results"]
            ]
        except (KeyError, TypeError) as exc:
            raise DagsterUnavailable(f"unexpected runs answer ({type(exc).__name__})") from None

    def queued_runs(self, *, limit: int = 1000) -> list[RunInfo]:
        return self.runs(QUEUED_STATUSES, limit=limit)

    # --- writes -----------------------------------------------------------------------------------------------

    def terminate_runs(self, run_ids: list[str]) -> TerminateResult:
        """Terminate runs (a QUEUED run is cancelled: removed from the queue, never launched)."""
        if not run_ids:
            return TerminateResult()
        data = self.execute(TERMINATE_RUNS_MUTATION, {"runIds": run_ids})
        node = data.get("terminateRuns")
        if not isinstance(node, dict) or node.get("__typename") != "TerminateRunsResult":
            message = node.get("message", "") if isinstance(node, dict) else ""
            raise DagsterUnavailable(f"terminateRuns failed: {str(message)[:200]}")
        result = TerminateResult()
        for run_id, item in zip(run_ids, node.get("terminateRunResults") or [], strict=False):
            kind = item.get("__typename") if isinstance(item, dict) else None
            if kind == "TerminateRunSuccess":
                result.cancelled.append(str(item.get("run", {}).get("runId") or run_id))
            else:
                result.failed[run_id] = str((item or {}).get("message") or kind or "unknown answer")[:200]
        return result

    def cancel_queued_runs(self, *, limit: int = 1000) -> tuple[list[RunInfo], TerminateResult]:
        """Cancel every queued run (up to `limit`); returns the runs that were queued and what happened to them."""
        queued = self.queued_runs(limit=limit)
        return queued, self.terminate_runs([r.run_id for r in queued])
