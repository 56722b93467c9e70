"""Fixtures for the operator surface (admin API, health, `si`): a real Dagster webserver over loopback.

Dagster is an external dependency of `integration_core` (reached only through the webserver's GraphQL API), so
the tests serve the genuine `dagster-webserver` ASGI app in-process, over a real Dagster instance (temporary
SQLite storage, the queued run coordinator), with runs and daemon heartbeats written into that instance
(`tests.support.dagster`). Every query and mutation of `integration_core.operations.dagster_client` thus runs
against the real schema and resolvers.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from integration_core.settings import Settings
from tests.support.api import serve_api
from tests.support.config import with_settings
from tests.support.dagster import DagsterHandle, serve_dagster_web


@pytest.fixture(scope="session")
def _dagster_web() -> Iterator[DagsterHandle]:
    with serve_dagster_web() as handle:
        yield handle


@pytest.fixture()
def dagster_web(_dagster_web: DagsterHandle) -> Iterator[DagsterHandle]:
    """The Dagster webserver with an empty run history and no daemon heartbeat."""
    _dagster_web.reset()
    yield _dagster_web
    _dagster_web.reset()


@pytest.fixture()
def ops_settings(settings: Settings, dagster_web: DagsterHandle) -> Settings:
    return with_settings(settings, dagster_webserver_url=dagster_web.url, health_check_timeout_seconds=30.0)


@pytest.fixture()
def ops(db: Engine, ops_settings: Settings) -> Iterator[httpx.Client]:
    """The API wired to the test Dagster webserver (sandbox and providers as in `settings`)."""
    with serve_api(db, ops_settings) as client:
        yield client
