"""PooledPostgresStorage (pipelines/storage.py): Dagster's PostgreSQL storage on one small pool per process.

Against a scratch database on the test server: a run with a partitioned asset materialisation goes through the
instance a run worker opens (one connection kept, one overflow), the three storages share the engine, connections
are reused instead of opened per query, and a server-side disconnect costs nothing (pre-ping)."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import QueuePool

from integration_core.db.budget import DAGSTER_WEBSERVER_CONNECTIONS
from pipelines.launcher import WORKER_POOL, worker_instance_ref
from pipelines.storage import PooledPostgresStorage
from tests.support.db import psycopg_url, scratch_database

ROOT = Path(__file__).resolve().parents[2]


def _psycopg2(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


@pytest.fixture()
def dagster_home(pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A DAGSTER_HOME with the repository's dagster.yaml storage block, on a scratch database."""
    with scratch_database(pg_server, "si_dagster_storage") as url:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", _psycopg2(url))
        config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": config["storage"]}))
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        yield tmp_path


def _engine(instance: dg.DagsterInstance) -> Engine:
    """The one engine of the instance's three storages (PooledPostgresStorage shares it)."""
    storages: list[Any] = [instance._run_storage, instance._event_storage, instance._schedule_storage]
    engines = {id(s._engine): s._engine for s in storages}
    assert len(engines) == 1, "the run, event log and schedule storages share one engine"
    engine: Engine = next(iter(engines.values()))
    assert isinstance(engine.pool, QueuePool)
    return engine


def _server_connections(url: str) -> int:
    """Connections to `url`'s database now. Asked from the server's `postgres` database: a sampler connected to the
    database it counts would count itself, and, when sampling in a loop, the backend of its previous connection
    while that one is still exiting."""
    name = make_url(url).database
    admin = make_url(url.replace("+psycopg2", "+psycopg")).set(database="postgres").render_as_string(False)
    with psycopg.connect(psycopg_url(admin), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_run_worker_instance_materialises_on_its_run_sized_pool(dagster_home: Path) -> None:
    with dg.DagsterInstance.get() as daemon:
        storage_data = daemon.get_ref().storage_data
        assert storage_data is not None and storage_data.class_name == PooledPostgresStorage.__name__
        assert _engine(daemon).pool.size() == 2  # type: ignore[attr-defined]
        # the run worker's instance, as the launcher hands it over
        with dg.DagsterInstance.from_ref(worker_instance_ref(daemon.get_ref())) as worker:
            engine = _engine(worker)
            assert engine.pool.size() == WORKER_POOL["pool_size"]  # type: ignore[attr-defined]
            assert engine.pool._max_overflow == WORKER_POOL["max_overflow"]  # type: ignore[attr-defined]

            companies = dg.DynamicPartitionsDefinition(name="companies")

            @dg.asset(partitions_def=companies)
            def deliveries(context: dg.AssetExecutionContext) -> dg.MaterializeResult[None]:
                context.log.info(f"delivering {context.partition_key}")
                return dg.MaterializeResult(metadata={"claimed": 3})

            worker.add_dynamic_partitions("companies", ["acme-1", "acme-2"])
            for key in ("acme-1", "acme-2"):
                result = dg.materialize([deliveries], instance=worker, partition_key=key)
                assert result.success
            # nested storage calls (an index check inside an event write) fit in the pool: no timeout, and the
            # pool never grew beyond what the budget counts for a run
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            events = worker.fetch_materializations(dg.AssetKey("deliveries"), limit=10).records
            assert {e.partition_key for e in events} == {"acme-1", "acme-2"}
            # the daemon's instance reads what the worker wrote
            assert daemon.get_runs_count() == 2


def test_connections_are_kept_and_reused_not_opened_per_query(dagster_home: Path) -> None:
    url = os.environ["DAGSTER_POSTGRES_URL"]
    with dg.DagsterInstance.get() as instance:
        for _ in range(20):
            instance.get_runs_count()
        engine = _engine(instance)
        assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
        assert 1 <= _server_connections(url) <= engine.pool.size()  # type: ignore[attr-defined]


def test_a_connection_the_server_dropped_is_replaced_before_use(dagster_home: Path) -> None:
    """A PostgreSQL restart (or an idle timeout) kills the kept connections: the next storage call pings, finds it
    dead and connects again, instead of failing."""
    import os

    url = os.environ["DAGSTER_POSTGRES_URL"]
    name = make_url(url).database
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs_count() == 0
        with psycopg.connect(psycopg_url(url.replace("+psycopg2", "+psycopg")), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        assert instance.get_runs_count() == 0


def test_schema_facts_are_read_once_not_at_every_query(dagster_home: Path) -> None:
    """Stock storage reflects the catalog on every run query and every instigator-state read; the pooled storage
    remembers what it found (statements seen on the engine's connections)."""
    from sqlalchemy import event

    with dg.DagsterInstance.get() as instance:
        engine = _engine(instance)
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", seen)
        try:
            for _ in range(2):
                instance.get_run_records(limit=5)
                instance.get_run_by_id("0" * 8 + "-0000-0000-0000-000000000000")
                instance.all_instigator_state()
            first = len(statements)
            for _ in range(10):
                instance.get_run_records(limit=5)
                instance.get_run_by_id("0" * 8 + "-0000-0000-0000-000000000000")
                instance.all_instigator_state()
            later = statements[first:]
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert not [s for s in later if "pg_catalog" in s or "information_schema" in s]
        assert len(later) <= 10 * 3 * 2  # the queries themselves (and a pre-ping each), nothing more


def test_the_webserver_gets_one_bounded_pool_with_its_statement_timeout(dagster_home: Path) -> None:
    """dagster-webserver calls `optimize_for_webserver` on each storage with its `--db-pool-max-overflow` (default
    20): stock storage builds three engines of up to 21 connections each. Here the three share one engine of at most
    `webserver_max_connections` (dagster.yaml), and every connection has the webserver's statement timeout."""
    from concurrent.futures import ThreadPoolExecutor

    limit = yaml.safe_load((ROOT / "dagster.yaml").read_text())["storage"]["custom"]["config"][
        "webserver_max_connections"
    ]
    assert limit == DAGSTER_WEBSERVER_CONNECTIONS  # what the connection budget counts for the webserver
    url = os.environ["DAGSTER_POSTGRES_URL"]
    with dg.DagsterInstance.get() as instance:
        before = _engine(instance)
        instance.optimize_for_webserver(statement_timeout=4321, pool_recycle=3600, max_overflow=20)
        engine = _engine(instance)
        assert engine is not before
        assert engine.pool.size() + engine.pool._max_overflow == limit  # type: ignore[attr-defined]
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "4321ms"

        # the UI's requests at once: twice the bound, each holding its connection a moment
        def query(_: int) -> int:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT pg_sleep(0.2)")
            return instance.get_runs_count()

        with ThreadPoolExecutor(max_workers=2 * limit) as pool:
            futures = [pool.submit(query, i) for i in range(2 * limit)]
            peak = 0
            while not all(f.done() for f in futures):
                peak = max(peak, _server_connections(url))
            assert [f.result() for f in futures] == [0] * (2 * limit)
        assert 1 <= peak <= limit
