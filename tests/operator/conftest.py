"""Harness for the operator surface (admin API, health, `si`): a real Dagster webserver over loopback.

Dagster is an external dependency of `integration_core` (reached only through the webserver's GraphQL API), so
the tests serve the genuine `dagster-webserver` ASGI app in-process, over a real Dagster instance (temporary
SQLite storage, the queued run coordinator), with runs and daemon heartbeats written into that instance. Every
query and mutation of `integration_core.operations.dagster_client` thus runs against the real schema and resolvers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from integration_core.settings import Settings
from tests.conftest import TEST_API_TOKEN
from tests.delivery.conftest import engine_settings, sandbox, sandbox_url, world  # noqa: F401 - shared fixtures

DEAD_URL = "http://127.0.0.1:9"  # discard port: connection refused at once


@dataclass
class DagsterHandle:
    url: str
    instance: Any

    def queue_run(self, partition: str, tenant: str = "1001", job_name: str = "fsm_deliveries_job") -> str:
        """A run the sensor requested, waiting in the queue (QUEUED)."""
        return self._add(partition, tenant, job_name, "QUEUED")

    def start_run(self, partition: str, tenant: str = "1001", job_name: str = "fsm_deliveries_job") -> str:
        """A run the daemon launched (STARTED): in progress, not in the queue."""
        return self._add(partition, tenant, job_name, "STARTED")

    def _add(self, partition: str, tenant: str, job_name: str, status: str) -> str:
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
                tags={"dagster/partition": partition, "tenant": tenant},
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


@pytest.fixture(scope="session")
def _dagster_web() -> Iterator[DagsterHandle]:
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


@pytest.fixture()
def dagster_web(_dagster_web: DagsterHandle) -> Iterator[DagsterHandle]:
    """The Dagster webserver with an empty run history and no daemon heartbeat."""
    _dagster_web.reset()
    yield _dagster_web
    _dagster_web.reset()


def with_settings(settings: Settings, **updates: Any) -> Settings:
    """A copy of the test settings with some values replaced (field names, not env aliases)."""
    return settings.model_copy(update=updates)


@pytest.fixture()
def ops_settings(settings: Settings, dagster_web: DagsterHandle) -> Settings:
    return with_settings(settings, dagster_webserver_url=dagster_web.url, health_check_timeout_seconds=30.0)


@contextmanager
def serve_api(engine: Engine, settings: Settings) -> Iterator[httpx.Client]:
    """The HTTP API over loopback with these settings; yields a client that sends the token."""
    from integration_core.api.app import create_app
    from integration_core.local.http_server import serve_in_thread

    with (
        serve_in_thread(create_app(settings, engine=engine)) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}, timeout=60) as client,
    ):
        yield client


@pytest.fixture()
def ops(db: Engine, ops_settings: Settings) -> Iterator[httpx.Client]:
    """The API wired to the test Dagster webserver (sandbox and providers as in `settings`)."""
    with serve_api(db, ops_settings) as client:
        yield client
