"""Dagster's PostgreSQL storage, with one small pool of connections per process instead of one connection per query.

dagster-postgres builds each of its three storages (runs, event log, schedules) on a SQLAlchemy `NullPool`: every
storage call opens a new PostgreSQL connection and closes it (only the webserver switches to a pool). Measured in
the `burst` bench on two cores: 40 % of the daemon's CPU samples were inside `psycopg2.connect`, and a delivery run
opened ~50 connections (each one a server process forked, authenticated and torn down) for its ~15 event writes,
run-status reads and cancel checks. Over a burst of short runs that is the largest single cost of the Dagster side.

`PooledPostgresStorage` is `DagsterPostgresStorage` with the three storages sharing one engine whose QueuePool keeps
`pool_size` connections open and opens up to `max_overflow` more (closed after use) when threads ask at once. The
same tables, migrations and queries; only where connections come from changes. Connections are checked before use
(`pool_pre_ping`: a restarted server costs one failed ping, not a failed storage call) and recycled after
`pool_recycle` seconds. Run workers get `pool_size: 1, max_overflow: 1` from the launcher (pipelines/launcher.py
`WORKER_POOL`): one connection for the run's event writes and its cancel watch, one more while Dagster nests a query
inside another (the event log checks an index in the middle of a write) — the two the connection budget counts per
run (integration_core/db/budget.py).

The webserver asks each storage to `optimize_for_webserver`; stock dagster-postgres answers with a new engine per
storage, each `pool_size=1` plus the webserver's `--db-pool-max-overflow` (default 20): up to 63 connections from
one UI process, counted nowhere. Here the three storages move together onto one engine of at most
`webserver_max_connections` (default 4, the budget's webserver line), with the webserver's statement timeout on
every connection; a fifth GraphQL request at once waits for a connection instead of opening one.

It also remembers the schema facts Dagster looks up again and again: stock storage reflects the catalog (an
`Inspector.get_columns` / `get_table_names` round trip and its processing) on *every* run query
(`has_run_stats_index_cols` in `get_run_records`) and every instigator-state read (`has_instigators_table`,
`has_built_index` of the schedule storage) — measured at ~0.5 s of CPU per run worker (its first `get_run_by_id`)
and a share of every daemon and sensor tick. A column, table or built index, once there, stays (Dagster's schema
migrations only add; they run with the processes stopped), so a *yes* is kept for the life of the process and a
*no* is asked again the next time.

Config (`dagster.yaml`):

    storage:
      custom:
        module: pipelines.storage
        class: PooledPostgresStorage
        config:
          postgres_url: {env: DAGSTER_POSTGRES_URL}
          pool_size: 2
          max_overflow: 10
          webserver_max_connections: 4
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Self, cast

import sqlalchemy
from dagster import Field, IntSource
from dagster._core.storage.config import pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
    set_pg_statement_timeout,
)
from sqlalchemy import event

DEFAULT_POOL_SIZE = 2
DEFAULT_MAX_OVERFLOW = 10
DEFAULT_POOL_RECYCLE_SECONDS = 600
DEFAULT_WEBSERVER_MAX_CONNECTIONS = 4  # integration_core/db/budget.py DAGSTER_WEBSERVER_CONNECTIONS


class _SharedWebserverPool:
    """The webserver's `optimize_for_webserver`, asked of each storage: the owner moves all three onto one
    bounded engine (see the module docstring)."""

    _si_owner: PooledPostgresStorage  # set by PooledPostgresStorage, the only builder of these storages

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        self._si_owner.use_webserver_pool(statement_timeout, pool_recycle)


class _SchemaFacts:
    """A per-instance memory of schema checks that came back true (see the module docstring)."""

    def _known(self, fact: Hashable, check: Callable[[], bool]) -> bool:
        known: set[Hashable] = self.__dict__.setdefault("_si_schema_facts", set())
        if fact in known:
            return True
        answer = bool(check())
        if answer:
            known.add(fact)
        return answer


class _RunStorage(_SharedWebserverPool, _SchemaFacts, PostgresRunStorage):
    def has_run_stats_index_cols(self) -> bool:
        return self._known("run_stats_index_cols", super().has_run_stats_index_cols)

    def has_bulk_actions_selector_cols(self) -> bool:
        return self._known("bulk_actions_selector_cols", super().has_bulk_actions_selector_cols)

    def has_backfill_id_column(self) -> bool:
        return self._known("backfill_id_column", super().has_backfill_id_column)

    def has_bulk_action_job_name_column(self) -> bool:
        return self._known("bulk_action_job_name_column", super().has_bulk_action_job_name_column)

    def has_backfill_tags_table(self) -> bool:
        return self._known("backfill_tags_table", super().has_backfill_tags_table)


class _EventLogStorage(_SharedWebserverPool, _SchemaFacts, PostgresEventLogStorage):
    def has_table(self, table_name: str) -> bool:
        return self._known(("table", table_name), lambda: super(_EventLogStorage, self).has_table(table_name))

    def has_asset_key_col(self, column_name: str) -> bool:
        return self._known(
            ("asset_key_col", column_name), lambda: super(_EventLogStorage, self).has_asset_key_col(column_name)
        )


class _ScheduleStorage(_SharedWebserverPool, _SchemaFacts, PostgresScheduleStorage):
    def has_instigators_table(self) -> bool:
        return self._known("instigators_table", super().has_instigators_table)

    def has_secondary_index_table(self) -> bool:
        return self._known("secondary_index_table", super().has_secondary_index_table)

    def has_built_index(self, migration_name: str) -> bool:
        return self._known(
            ("built_index", migration_name), lambda: super(_ScheduleStorage, self).has_built_index(migration_name)
        )


class PooledPostgresStorage(DagsterPostgresStorage):
    """DagsterPostgresStorage whose run, event log and schedule storages share one pooled engine and remember
    the schema facts they have seen."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        pool_recycle: int = DEFAULT_POOL_RECYCLE_SECONDS,
        webserver_max_connections: int = DEFAULT_WEBSERVER_MAX_CONNECTIONS,
    ) -> None:
        # DagsterPostgresStorage.__init__, with the storages that remember schema facts
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = _RunStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
        self._event_log_storage = _EventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = _ScheduleStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
        super(DagsterPostgresStorage, self).__init__()  # type: ignore[no-untyped-call]  # DagsterStorage.__init__
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.webserver_max_connections = max(1, webserver_max_connections)
        self._token_provider = token_provider
        self._webserver_settings: tuple[int, int] | None = None
        self.engine: sqlalchemy.Engine = create_pg_engine(
            postgres_url,
            token_provider,
            isolation_level="AUTOCOMMIT",  # as dagster-postgres's own engines
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=pool_recycle,
            pool_pre_ping=True,
        )
        for storage in self._storages():
            storage._engine.dispose()  # the NullPool engine holds nothing; dropped for clarity
            storage._engine = self.engine
            storage._si_owner = self

    def _storages(self) -> tuple[_RunStorage, _EventLogStorage, _ScheduleStorage]:
        return cast(
            "tuple[_RunStorage, _EventLogStorage, _ScheduleStorage]",
            (self._run_storage, self._event_log_storage, self._schedule_storage),
        )

    def use_webserver_pool(self, statement_timeout: int, pool_recycle: int) -> None:
        """The webserver's pool: one engine for the three storages, at most `webserver_max_connections`
        connections, each with `statement_timeout` (ms). Asked once per storage; built at the first ask."""
        if self._webserver_settings == (statement_timeout, pool_recycle):
            return
        engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=1,  # as stock: one kept for the UI's polling
            max_overflow=self.webserver_max_connections - 1,
            pool_recycle=pool_recycle,
            pool_pre_ping=True,
        )
        event.listen(engine, "connect", lambda connection, _: set_pg_statement_timeout(connection, statement_timeout))
        previous, self.engine = self.engine, engine
        for storage in self._storages():
            storage._engine = engine
        previous.dispose()
        self._webserver_settings = (statement_timeout, pool_recycle)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            **cast("Mapping[str, Any]", pg_config()),
            "pool_size": Field(IntSource, is_required=False, default_value=DEFAULT_POOL_SIZE),
            "max_overflow": Field(IntSource, is_required=False, default_value=DEFAULT_MAX_OVERFLOW),
            "pool_recycle": Field(IntSource, is_required=False, default_value=DEFAULT_POOL_RECYCLE_SECONDS),
            "webserver_max_connections": Field(
                IntSource, is_required=False, default_value=DEFAULT_WEBSERVER_MAX_CONNECTIONS
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> Self:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
            pool_size=config_value.get("pool_size", DEFAULT_POOL_SIZE),
            max_overflow=config_value.get("max_overflow", DEFAULT_MAX_OVERFLOW),
            pool_recycle=config_value.get("pool_recycle", DEFAULT_POOL_RECYCLE_SECONDS),
            webserver_max_connections=config_value.get("webserver_max_connections", DEFAULT_WEBSERVER_MAX_CONNECTIONS),
        )
