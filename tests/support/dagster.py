"""A Dagster webserver for the operator tests: the genuine `dagster-webserver` ASGI app served in-process over a
real Dagster instance (temporary SQLite storage, the queued run coordinator), with runs and daemon heartbeats
written into that instance by `DagsterHandle`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class DagsterHandle:
    url: str
    instance: Any

    def queue_run(
        self,
        partition: str,
        tenant: str = "1001",
        job_name: str = "fsm_deliveries_job",
        tags: dict[str, str] | None = None,
    ) -> str:
        """A run the sensor requested, waiting in the queue (QUEUED), with `tags` besides its partition and tenant."""
        return self._add(partition, tenant, job_name, "QUEUED", tags)

    def start_run(self, partition: str, tenant: str = "1001", job_name: str = "fsm_deliveries_job") -> str:
        """A run the daemon launched (STARTED): in progress, not in the queue."""
        return self._add(partition, tenant, job_name, "STARTED")

    def _add(self, partition: str, tenant: str, job_name: str, status: str, tags: dict[str, str] | None = None) -> str:
        from dagster import DagsterRunStatus
        from dagster._core.remote_origin import (
            GrpcServerCodeLocationOrigin,
            RemoteJobOrigin,
            RemoteRepositoryOrigin,
        )
        from dagster._core.storage.dagster_run import DagsterRun

        origin = RemoteJobOrigin(
            repository_origin=RemoteRepositoryOrigin(
                code_location_origin=GrpcServerCodeLocationOrigin(
                    host="127.0.0.1", port=4000, location_name="service_integration"
                ),
                repository_name="__repository__",
            ),
            job_name=job_name,
        )
        run_id = str(uuid.uuid4())
        self.instance.add_run(
            DagsterRun(
                job_name=job_name,
                run_id=run_id,
                status=DagsterRunStatus[status],
                tags={**(tags or {}), "dagster/partition": partition, "tenant": tenant},
                remote_job_origin=origin,
            )
        )
        return run_id

    def heartbeat(self) -> None:
        """Every daemon the instance requires reports a heartbeat now (a healthy `dagster-daemon run`)."""
        from dagster._daemon.types import DaemonHeartbeat

        for daemon_type in self.instance.get_required_daemon_types():
            self.instance.add_daemon_heartbeat(
                DaemonHeartbeat(timestamp=time.time(), daemon_type=daemon_type, daemon_id="test", errors=[])
            )

    def run_status(self, run_id: str) -> str:
        return str(self.instance.get_run_by_id(run_id).status.value)

    def reset(self) -> None:
        self.instance.wipe()
        self.instance.wipe_daemon_heartbeats()


@contextmanager
def serve_dagster_web() -> Iterator[DagsterHandle]:
    """The webserver over a fresh test instance, served over loopback until the block ends."""
    from dagster._core.test_utils import instance_for_test
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster_webserver.app import create_app_from_workspace_process_context

    from integration_core.local.http_server import serve_in_thread

    overrides = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with (
        instance_for_test(overrides=overrides) as instance,
        WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context,
        serve_in_thread(create_app_from_workspace_process_context(context), startup_timeout=60) as url,
    ):
        yield DagsterHandle(url, instance)
