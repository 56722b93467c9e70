"""What a run worker imports and builds, done once by the run launcher's forkserver (see pipelines/launcher.py).

Every run worker is a fork of that process, so anything done here costs nothing per run. The list follows
what a delivery run actually loads beyond the code location (measured from `sys.modules` at the end of a run):
the run-worker body, Postgres run/event storage and its schema check, and the provider client's HTTP stack. Some
are imported lazily by their packages, and so named here one by one: `upath`'s core (its first use reads the entry
points of every installed package through fsspec's registry, ~2 s of wall time per run worker in a burst, when
Dagster opens the run's instance), `sniffio` (httpcore's first request), Dagster's config processing and active
execution (the run's plan).

Beyond imports, `warm()` builds what every run would otherwise build again from scratch (measured with a CPU
profile of run workers in a burst: together ~0.5 s of CPU per run on this machine's cores, paid before the run
can claim anything): the code location's repository and each job's execution graph (Dagster caches both on the
`Definitions` object the worker finds in `sys.modules`), SQLAlchemy's ORM mappers, the TLS context of the provider
clients (loading the CA bundle) and the regular expressions of the daily partitions' cron schedule. Then the
garbage collector freezes all of it: a worker's collections no longer walk (and so copy, page by page, from the
forkserver) the hundreds of megabytes it inherited.

No connection, thread or event loop may exist before the fork: `warm()` only builds objects in memory.
"""

import gc

import alembic.command
import alembic.runtime.migration
import anyio._backends._asyncio
import dagster
import dagster._cli.api
import dagster._core.execution.api
import dagster._core.executor.in_process
import dagster._core.storage.noop_compute_log_manager
import dagster._grpc.impl
import dagster_postgres
import httpcore
import psycopg2.extras  # type: ignore[import-untyped]
import sniffio
import sqlalchemy.dialects.postgresql.psycopg
import sqlalchemy.dialects.postgresql.psycopg2
import sqlalchemy.ext.asyncio
import sqlalchemy.orm
import upath
import upath.implementations.local
from dagster._config import process_config
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.system_config.composite_descent import composite_descent
from upath import UPath

import integration_core.db.models
import integration_core.providers.housecallpro.provider
import integration_core.providers.servicetitan.provider
import pipelines.definitions
from integration_core.providers.http import tls_context

__all__ = [
    "ActiveExecution",
    "UPath",
    "alembic",
    "anyio",
    "composite_descent",
    "dagster",
    "dagster_postgres",
    "httpcore",
    "integration_core",
    "pipelines",
    "process_config",
    "psycopg2",
    "sniffio",
    "sqlalchemy",
    "upath",
    "warm",
]


def warm() -> None:
    """Build, in this process, what each run worker would otherwise build for itself (see the module docstring)."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository

    repository = ReconstructableRepository(ModuleCodePointer("pipelines.definitions", "defs", working_directory=None))
    repository_def = repository.get_definition()
    for job in repository_def.get_all_jobs():
        job_def = ReconstructableJob(repository, job.name).get_definition()
        if job_def.asset_layer.executable_asset_keys:  # an asset job runs with its assets selected
            ReconstructableJob(
                repository, job.name, asset_selection=frozenset(job_def.asset_layer.executable_asset_keys)
            ).get_definition()
    for partitions_def in {a.partitions_def for a in repository_def.assets_defs_by_key.values() if a.partitions_def}:
        if isinstance(partitions_def, dagster.TimeWindowPartitionsDefinition):
            partitions_def.get_cron_schedule()  # compiles the regular expressions that parse a cron schedule
    sqlalchemy.orm.configure_mappers()
    tls_context()
    gc.collect()
    gc.freeze()


warm()
