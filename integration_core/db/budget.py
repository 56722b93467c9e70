"""The PostgreSQL connection budget: what every process of the service may open, against what the server allows.

Every process has a small, bounded pool (docs/connections.md has the formula and the measured figures):

    runs x (RUN_DB_POOL_SIZE + Dagster per run) + API + daemon + webserver + code server + reserve
        ≤ the server's max_connections

Dagster's own storage keeps a small pool per process (pipelines/storage.py: `pool_size` kept, `max_overflow` opened
while threads ask at once and closed after), so a Dagster process holds at most one per thread at work; the figures
below are those threads. `plan()` is the configured maximum,
`check()` compares it (and what is connected now) with the server.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Connection, text

from integration_core.settings import Settings

# Dagster processes, one connection per thread at work (dagster.yaml: sensor workers 4, schedule workers 2,
# dequeue workers 4, plus run monitoring, run retries, backfills, asset and freshness daemons)
DAGSTER_DAEMON_CONNECTIONS = 12
# the webserver's one pool for its three storages: dagster.yaml `webserver_max_connections` (pipelines/storage.py)
DAGSTER_WEBSERVER_CONNECTIONS = 4
# a run worker's Dagster storage pool (pipelines/launcher.py WORKER_POOL): one kept for its event writes and cancel
# watch, and one more while Dagster nests a query inside another (the event log checks an index mid-write)
DAGSTER_PER_RUN_CONNECTIONS = 2
CODE_SERVER_SENSOR_THREADS = 4  # sensor evaluations at once (dagster.yaml sensors.num_workers)
API_HEALTH_POOL = 2  # integration_core.operations.health: one small pool for all provider checks
API_WEBHOOK_APPLIER = 1  # integration_core.webhooks.apply.InboxApplier: one connection while events arrive


class BudgetLine(BaseModel):
    component: str
    connections: int
    how: str


class ConnectionBudget(BaseModel):
    """The configured maximum, line by line; and, when read from the server, its limit and current use."""

    lines: list[BudgetLine]
    configured_max: int
    max_connections: int | None = None
    current: int | None = None  # connections to the whole server now (pg_stat_activity, client backends)
    fits: bool | None = None
    warning: str | None = None


def plan(settings: Settings) -> list[BudgetLine]:
    runs = settings.dagster_max_concurrent_runs
    per_run = settings.run_db_pool_size + DAGSTER_PER_RUN_CONNECTIONS
    app_pool = settings.db_pool_size + settings.db_max_overflow
    return [
        BudgetLine(
            component="delivery runs",
            connections=runs * per_run,
            how=f"{runs} runs (DAGSTER_MAX_CONCURRENT_RUNS) x ({settings.run_db_pool_size} RUN_DB_POOL_SIZE "
            f"+ {DAGSTER_PER_RUN_CONNECTIONS} Dagster)",
        ),
        BudgetLine(
            component="API",
            connections=app_pool + API_HEALTH_POOL + API_WEBHOOK_APPLIER,
            how=f"{settings.db_pool_size} DB_POOL_SIZE + {settings.db_max_overflow} DB_MAX_OVERFLOW "
            f"+ {API_HEALTH_POOL} health checks + {API_WEBHOOK_APPLIER} webhook applier",
        ),
        BudgetLine(
            component="Dagster daemon",
            connections=DAGSTER_DAEMON_CONNECTIONS + 1,
            how=f"{DAGSTER_DAEMON_CONNECTIONS} daemon threads + 1 releasing a dead worker's routings",
        ),
        BudgetLine(
            component="Dagster webserver",
            connections=DAGSTER_WEBSERVER_CONNECTIONS,
            how=f"one pool of {DAGSTER_WEBSERVER_CONNECTIONS} (dagster.yaml webserver_max_connections)",
        ),
        BudgetLine(
            component="code server",
            connections=2 * CODE_SERVER_SENSOR_THREADS,
            how=f"{CODE_SERVER_SENSOR_THREADS} sensor evaluations x (1 service + 1 Dagster)",
        ),
        BudgetLine(
            component="reserve",
            connections=settings.db_connection_reserve,
            how="DB_CONNECTION_RESERVE: si commands, psql, backups, migrations",
        ),
    ]


def configured_max(settings: Settings) -> int:
    return sum(line.connections for line in plan(settings))


def warning_for(settings: Settings, total: int, max_connections: int) -> str | None:
    if total <= max_connections:
        return None
    lines = "; ".join(f"{x.component} {x.connections} ({x.how})" for x in plan(settings))
    behind = " (through PgBouncer: compare with its max_client_conn instead)" if settings.database_pgbouncer else ""
    return (
        f"connection budget: the service may open up to {total} PostgreSQL connections, but the server allows "
        f"max_connections = {max_connections}{behind}. {lines}. Lower DAGSTER_MAX_CONCURRENT_RUNS or "
        "RUN_DB_POOL_SIZE, raise max_connections, or put PgBouncer in front (docs/connections.md)."
    )


_SERVER = text(
    """
    SELECT current_setting('max_connections')::int AS max_connections,
           (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS current
    """
)


def check(conn: Connection, settings: Settings) -> ConnectionBudget:
    """The configured maximum against the server's max_connections, and the connections open now."""
    row = conn.execute(_SERVER).mappings().one()
    total = configured_max(settings)
    max_connections, current = int(row["max_connections"]), int(row["current"])
    return ConnectionBudget(
        lines=plan(settings),
        configured_max=total,
        max_connections=max_connections,
        current=current,
        fits=total <= max_connections,
        warning=warning_for(settings, total, max_connections),
    )
