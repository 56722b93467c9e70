"""What a run worker imports, loaded once by the run launcher's forkserver (see pipelines/launcher.py).

Every run worker is a fork of that process, so anything imported here costs nothing per run. The list follows
what a delivery run actually loads beyond the code location (measured from `sys.modules` at the end of a run):
the run-worker body, Postgres run/event storage and its schema check, and the provider client's HTTP stack.
Importing only: no connection, thread or event loop may exist before the fork.
"""

import alembic.command
import alembic.runtime.migration
import anyio._backends._asyncio
import dagster._cli.api
import dagster._core.execution.api
import dagster._core.executor.in_process
import dagster._core.storage.local_compute_log_manager
import dagster._grpc.impl
import dagster_postgres
import httpcore
import psycopg2.extras  # type: ignore[import-untyped]
import sqlalchemy.dialects.postgresql.psycopg
import sqlalchemy.dialects.postgresql.psycopg2
import sqlalchemy.ext.asyncio
import upath

import integration_core.providers.servicetitan.provider
import pipelines.definitions

__all__ = [
    "alembic",
    "anyio",
    "dagster",
    "dagster_postgres",
    "httpcore",
    "integration_core",
    "pipelines",
    "psycopg2",
    "sqlalchemy",
    "upath",
]
