"""The service's own connections behind PgBouncer in transaction pooling (docker-compose.yml's `pgbouncer`).

A real `pgbouncer` (Debian's package; `.ci/run` installs it) runs on a free loopback port in front of the test
server, in `pool_mode = transaction`: every transaction may get a different server connection, and a server
connection serves many clients one after another. What that means for the app, checked here:

(a) psycopg's automatic server-side prepared statements break (a statement run five times is PREPAREd on the
    server connection of the moment, which the next client then also gets), unless PgBouncer tracks prepared
    statements itself (protocol-level support, PgBouncer >= 1.21 with max_prepared_statements > 0; not the
    Debian 12 package, 1.18). DATABASE_PGBOUNCER=true makes the app's engines pass `prepare_threshold=None`,
    and with it the same statement runs any number of times over pooled server connections.
(b) the advisory lock taken at intake is transaction-scoped (`pg_advisory_xact_lock`), so it is released at
    COMMIT, before PgBouncer hands the server connection on, and two transactions through PgBouncer serialize
    on it; two concurrent referrals with the same Idempotency-Key make one job.
(c) session state (SET, session advisory locks, LISTEN, temporary tables) leaks to other clients or is lost;
    the app sets none.

The tests that need a running PgBouncer are skipped only when the `pgbouncer` binary is missing; the checks of
the code ((b), (c)) always run.
"""

from __future__ import annotations

import ast
import os
import pwd
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from integration_core.local.http_server import free_port
from integration_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin:/usr/bin")


STATEMENT = "SELECT pg_backend_pid(), %s::int"


@dataclass(frozen=True)
class Bouncer:
    port: int
    version: tuple[int, int]
    database: str  # the test database, pooled (pool_size 4)

    def url(self, alias: str | None = None) -> str:
        """SQLAlchemy URL of `alias` through PgBouncer: the test database, or `single` (a pool of one)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{alias or self.database}"

    def conninfo(self, alias: str | None = None) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={alias or self.database}"


def _version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    assert found, out
    return int(found[1]), int(found[2])


def _run_as(socket_dir: str | None) -> list[str]:
    """PgBouncer refuses to run as root: switch to the owner of the server's socket directory (the embedded
    server runs as its own user), else `postgres`, else `nobody`. It reads its config before switching."""
    if os.geteuid() != 0:
        return []
    if socket_dir is not None:
        return ["-u", pwd.getpwuid(os.stat(socket_dir).st_uid).pw_name]
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["-u", user]
    pytest.fail("running as root and no unprivileged user to run pgbouncer as")


@pytest.fixture(scope="module")
def bouncer(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bouncer]:
    if PGBOUNCER is None:
        pytest.skip("the pgbouncer binary is not installed (apt-get install pgbouncer; .ci/run does)")
    server = make_url(database_url)
    socket_dir = server.query.get("host")
    socket_dir = socket_dir if isinstance(socket_dir, str) else None
    host = socket_dir or server.host or "127.0.0.1"
    target = f"host={host} port={server.port or 5432} user={server.username or 'postgres'}"
    if server.password:
        target += f" password={server.password}"
    version = _version(PGBOUNCER)
    port = free_port()
    work = tmp_path_factory.mktemp("pgbouncer")
    (work / "users.txt").write_text('"postgres" ""\n')
    settings = [
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {work / 'users.txt'}",
        "pool_mode = transaction",
        "default_pool_size = 4",
        "max_client_conn = 200",
        "ignore_startup_parameters = extra_float_digits,options",
    ]
    if version >= (1, 21):
        # no protocol-level prepared statement support: the only behaviour of PgBouncer before 1.21 (and of
        # any PgBouncer that is not configured for it), which is what the app must work with
        settings.append("max_prepared_statements = 0")
    ini = work / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"{server.database} = {target} dbname={server.database}\n"
        f"single = {target} dbname={server.database} pool_size=1\n"
        "[pgbouncer]\n" + "\n".join(settings) + "\n"
    )
    log = work / "pgbouncer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PGBOUNCER, *_run_as(socket_dir), str(ini)], stdout=out, stderr=subprocess.STDOUT)
    bouncer = Bouncer(port, version, str(server.database))
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pgbouncer exited with {proc.returncode}:\n{log.read_text()}")
            try:
                psycopg.connect(bouncer.conninfo(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail(f"pgbouncer did not accept connections:\n{log.read_text()}")
                time.sleep(0.1)
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _app_connect_args() -> dict[str, Any]:
    """What the app's engines pass to psycopg with DATABASE_PGBOUNCER=true: `integration_core.db.engine.
    connect_args` where it exists, else the documented option itself (settings.py: prepare_threshold=None)."""
    from integration_core.db import engine as engine_mod

    build = getattr(engine_mod, "connect_args", None)
    if build is None:
        return {"prepare_threshold": None}
    args: dict[str, Any] = build(Settings(DATABASE_PGBOUNCER=True))
    return args


def _pgbouncer_engine(url: str, **kwargs: Any) -> Engine:
    return create_engine(url, pool_pre_ping=True, **kwargs)


# --- (a) prepared statements --------------------------------------------------------------------------------


def test_auto_prepared_statements_break_under_transaction_pooling(bouncer: Bouncer) -> None:
    """psycopg's default (prepare_threshold=5): two clients sharing one server connection, one after the other,
    each prepare the same statement under the same name on it, and the second fails."""
    a = psycopg.connect(bouncer.conninfo("single"), autocommit=True)
    b = psycopg.connect(bouncer.conninfo("single"), autocommit=True)
    try:
        assert a.prepare_threshold == 5
        for i in range(8):
            a.execute(STATEMENT, (i,))
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            for i in range(8):
                b.execute(STATEMENT, (i,))
    finally:
        a.close()
        b.close()


def test_prepare_threshold_none_survives_pooled_server_connections(bouncer: Bouncer) -> None:
    """The same two clients with prepare_threshold=None, then the app's engine options from many threads over
    a pool of four server connections: the same statement, run hundreds of times, never fails."""
    assert _app_connect_args() == {"prepare_threshold": None}
    clients = [psycopg.connect(bouncer.conninfo("single"), autocommit=True, prepare_threshold=None) for _ in "ab"]
    try:
        for client in clients:
            for i in range(8):
                client.execute(STATEMENT, (i,))
    finally:
        for client in clients:
            client.close()

    engine = _pgbouncer_engine(bouncer.url(), pool_size=8, max_overflow=0, connect_args=_app_connect_args())
    backends: set[int] = set()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            for i in range(40):
                with engine.begin() as conn:
                    pid = conn.execute(text("SELECT pg_backend_pid(), CAST(:i AS int)"), {"i": i}).one()[0]
                with lock:
                    backends.add(int(pid))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        engine.dispose()
    assert errors == []
    assert 1 <= len(backends) <= 4, "eight pooled client connections share at most pool_size server connections"


# --- (b) the intake's advisory lock ---------------------------------------------------------------------------


def test_the_app_takes_only_transaction_scoped_advisory_locks() -> None:
    calls: list[tuple[Path, str]] = []
    for path in [*(ROOT / "integration_core").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]:
        calls += [(path, m) for m in re.findall(r"pg_(?:try_)?advisory_\w*lock\w*", path.read_text())]
    assert (ROOT / "integration_core" / "referrals" / "intake.py", "pg_advisory_xact_lock") in calls
    session_scoped = [(str(p.relative_to(ROOT)), name) for p, name in calls if "xact" not in name]
    assert session_scoped == [], "session advisory locks are not released at COMMIT under transaction pooling"


def test_advisory_xact_locks_serialize_through_pgbouncer(bouncer: Bouncer) -> None:
    engine = _pgbouncer_engine(bouncer.url(), pool_size=4, max_overflow=0, connect_args=_app_connect_args())
    held: list[tuple[float, float]] = []
    start = threading.Barrier(2)
    key = "job-intake:test:same-key"

    def hold() -> None:
        start.wait(10)
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})
            t0: float = conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
            conn.execute(text("SELECT pg_sleep(0.4)"))
            t1: float = conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        held.append((float(t0), float(t1)))

    try:
        threads = [threading.Thread(target=hold) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        (_, a1), (b0, _) = sorted(held)
        assert b0 >= a1, f"the lock was held by both transactions at once: {held}"
        with engine.begin() as conn:  # released at COMMIT: free for whoever gets a server connection next
            assert conn.execute(
                text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key}
            ).scalar_one()
    finally:
        engine.dispose()


def test_concurrent_referrals_with_one_idempotency_key_make_one_job_through_pgbouncer(
    bouncer: Bouncer, demo: Any
) -> None:
    """The real intake (`create_job`) in two transactions at once through PgBouncer, same Idempotency-Key."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import sessionmaker

    from integration_core.db.models import Job
    from integration_core.local.seed import demo_company_id, demo_technician_id
    from integration_core.referrals.intake import create_job
    from integration_core.schemas import JobCreate

    data = JobCreate.model_validate(
        {
            "summary": "Water heater leaking in the garage",
            "address": {"street": "1 Canyon Dr", "city": "Beverly Hills", "state": "CA", "zip_code": "90210"},
            "homeowner": {"name": "Pat Doe", "phone": "310-555-0199"},
            "created_by_company_id": str(demo_company_id("handy-neighbors")),
            "created_by_technician_id": str(demo_technician_id("handy-neighbors")),
            "required_skills": ["water_heater"],
        }
    )
    engine = _pgbouncer_engine(bouncer.url(), pool_size=4, max_overflow=0, connect_args=_app_connect_args())
    sessions = sessionmaker(engine, expire_on_commit=False)
    start = threading.Barrier(4)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def refer() -> None:
        try:
            start.wait(10)
            with sessions() as session, session.begin():
                result = create_job(session, data, idempotency_key="pgbouncer-1", top_n=1)
                results.append((str(result.job.id), result.created))
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=refer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len({job for job, _ in results}) == 1
        assert sorted(created for _, created in results) == [False, False, False, True]
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 1
    finally:
        engine.dispose()


# --- (c) session state -----------------------------------------------------------------------------------------


def test_session_state_leaks_between_clients_under_transaction_pooling(bouncer: Bouncer) -> None:
    """Why nothing may rely on session state behind PgBouncer: a SET by one client is what the next client of
    that server connection gets (and the first client, on its next transaction, may not have it)."""
    with psycopg.connect(bouncer.conninfo("single"), autocommit=True, prepare_threshold=None) as a:
        a.execute("SET statement_timeout = '4321ms'")
    with psycopg.connect(bouncer.conninfo("single"), autocommit=True, prepare_threshold=None) as b:
        leaked = b.execute("SHOW statement_timeout").fetchone()
        b.execute("RESET statement_timeout")
    assert leaked == ("4321ms",)


SESSION_STATE = re.compile(
    r"^\s*(SET\s+(?!LOCAL\b|NULL$|DEFAULT$)|RESET\b|DISCARD\b|LISTEN\b|UNLISTEN\b|PREPARE\b|DEALLOCATE\b|CREATE\s+TEMP|"
    r"DECLARE\b.*\bWITH\s+HOLD\b)"
    r"|set_config\([^)]*,\s*false\s*\)",
    re.S,
)


def test_the_app_sets_no_session_state() -> None:
    """No SQL string in the service's code (the engines behind PgBouncer) sets session state. `SET LOCAL`
    and set_config(..., true) are transaction-scoped and fine. (Migrations run against PostgreSQL directly.)"""
    found: list[str] = []
    for path in [*(ROOT / "integration_core").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SESSION_STATE.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:80]}")
    assert found == []
