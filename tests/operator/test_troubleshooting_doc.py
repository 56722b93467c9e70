"""Every command docs/troubleshooting.md shows is exercised here, in the order the guide shows it, against a real
API, database, Dagster webserver (heartbeating, with a queued run) and a ServiceTitan sandbox with the demo tenants:

- `curl …`            run with the real curl binary; `http://localhost:8000` → the test API, `$API_TOKEN`,
                      `$ROUTING_ID`, `$COMPANY_ID` → real values; must answer 2xx
- `uv run si …`       run in-process (typer's CliRunner) on the test database; must exit 0
- `uv run alembic …`  run for real on the test database; must exit 0
- SQL (```sql)        run with psql on the test database; must succeed
- `echo`, `ls`, `grep`, `psql`  run with bash (a `.env` from .env.example in the working directory); exit 0
- `make …`            the target exists and `make -n` accepts it (run end to end by tests/test_guide.py)
- `docker …`          the compose services and the commands run inside them exist (no Docker here)

A command of any other kind fails the test: the guide may only show what is checked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from integration_core.cli import app
from integration_core.db.engine import session_scope
from integration_core.local.demo import DEMO_APP_KEY, DEMO_HCP_ACCOUNTS, DEMO_TENANTS
from integration_core.local.seed import demo_company_id, demo_technician_id, seed_demo
from integration_core.settings import Settings
from tests.support.api import serve_api
from tests.support.compose import SERVICES, resolve
from tests.support.config import SHARED, TEST_API_TOKEN, TEST_SECRET_KEY, clear_caches, with_settings
from tests.support.dagster import DagsterHandle
from tests.support.sandbox import SandboxHandle

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "troubleshooting.md"
VENV_BIN = Path(sys.executable).parent
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Command:
    kind: str  # bash | sql
    text: str
    line: int

    def __str__(self) -> str:
        return f"docs/troubleshooting.md:{self.line}: {self.text}"


def _complete(candidate: str) -> bool:
    if candidate.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(candidate, comments=True)
    except ValueError:  # an open quote: a multi-line argument continues
        return False
    return True


def commands() -> list[Command]:
    doc = DOC.read_text()
    found: list[Command] = []
    for fence in FENCE.finditer(doc):
        lang = fence["lang"]
        start_line = doc.count("\n", 0, fence.start("body")) + 1
        lines = [line[len(fence["indent"]) :] for line in fence["body"].splitlines()]
        if lang == "bash":
            current, first = "", 0
            for offset, line in enumerate(lines):
                if not current and (not line.strip() or line.lstrip().startswith("#")):
                    continue
                if not current:
                    first = start_line + offset
                current = f"{current}\n{line}" if current else line
                if _complete(current):
                    found.append(Command("bash", current.strip(), first))
                    current = ""
            assert not current, f"unterminated command in the block at line {start_line}"
        elif lang == "sql":
            statement, first = "", 0
            for offset, line in enumerate(lines):
                if not line.strip() or line.lstrip().startswith("--"):
                    continue
                if line.lstrip().startswith("\\"):
                    found.append(Command("sql", line.strip(), start_line + offset))
                    continue
                if not statement:
                    first = start_line + offset
                statement = f"{statement}\n{line}" if statement else line
                if statement.rstrip().endswith(";"):
                    found.append(Command("sql", statement.strip(), first))
                    statement = ""
            assert not statement, f"unterminated SQL in the block at line {start_line}"
        else:
            assert lang in {"text", "json"}, f"code block of unknown kind {lang!r} at line {start_line}"
    return found


COMMANDS = commands()


# --- the world the guide is run against ---------------------------------------------------------------------


@dataclass
class Guide:
    api: str
    env: dict[str, str]
    routing_id: str
    company_id: str
    db: Engine
    workdir: Path
    monkeypatch: pytest.MonkeyPatch


@pytest.fixture()
def guide(
    db: Engine,
    settings: Settings,
    dagster_web: DagsterHandle,
    sandbox: SandboxHandle,
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Guide]:
    with session_scope(db) as session:
        seed_demo(session, secret_key=TEST_SECRET_KEY, sandbox_url=sandbox.url)
    company = demo_company_id("sunset-plumbing")
    with db.begin() as conn:
        job: uuid.UUID = conn.execute(
            text(
                "INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
                "created_by_company_id, created_by_technician_id) VALUES ('Leaking water heater', '1 Elm St', "
                "'Beverly Hills', 'CA', '90210', 'Pat Doe', '310-555-0101', :c, :t) RETURNING id"
            ),
            {"c": demo_company_id("handy-neighbors"), "t": demo_technician_id("handy-neighbors")},
        ).scalar_one()
        routing: uuid.UUID = conn.execute(
            text("INSERT INTO job_routings (job_id, receiving_company_id) VALUES (:j, :c) RETURNING id"),
            {"j": job, "c": company},
        ).scalar_one()
    dagster_web.heartbeat()
    dagster_web.queue_run(str(company))

    s = with_settings(settings, dagster_webserver_url=dagster_web.url, servicetitan_sandbox_url=sandbox.url)
    libpq = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    env = {
        **os.environ,
        "DATABASE_URL": libpq,
        "SECRET_KEY": TEST_SECRET_KEY,
        "API_TOKEN": TEST_API_TOKEN,
        "ENVIRONMENT": "test",
        "DAGSTER_WEBSERVER_URL": dagster_web.url,
        "SERVICETITAN_SANDBOX_URL": sandbox.url,
        "ROUTING_ID": str(routing),
        "COMPANY_ID": str(company),
        "ELECTROFIX_ID": str(demo_company_id("electrofix")),  # the demo's Housecall Pro company
        "COLUMNS": "200",
    }
    for name in ("SERVICETITAN_CLIENT_ID", "SERVICETITAN_CLIENT_SECRET", "SERVICETITAN_APP_KEY"):
        env.pop(name, None)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    for name in ("migrations", "integration_core"):
        (tmp_path / name).symlink_to(ROOT / name)
    with serve_api(db, s) as client:
        yield Guide(str(client.base_url), env, str(routing), str(company), db, tmp_path, monkeypatch)
    monkeypatch.undo()
    clear_caches()


# --- runners ------------------------------------------------------------------------------------------------


def _fail_the_routing(w: Guide) -> None:
    """Retry commands need a dead letter: before each command the routing is `failed` again."""
    with w.db.begin() as conn:
        conn.execute(
            text(
                "UPDATE job_routings SET status = 'failed', last_error_code = 'validation_error', "
                "last_error_message = 'Summary is required', lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = :id"
            ),
            {"id": w.routing_id},
        )


def run_curl(cmd: Command, w: Guide) -> None:
    line = cmd.text.replace("http://localhost:8000", w.api)
    out = w.workdir / "curl-body"
    r = subprocess.run(
        ["bash", "-c", f'{line} -sS -o "{out}" -w "%{{http_code}}"'],
        env=w.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=w.workdir,
    )
    assert r.returncode == 0, f"{cmd}\n{r.stderr}"
    status = int(r.stdout.strip()[-3:])
    body = out.read_text() if out.exists() else ""
    assert 200 <= status < 300, f"{cmd}\n→ HTTP {status}: {body[:500]}"


def run_si(cmd: Command, w: Guide, argv: list[str]) -> None:
    args = [re.sub(r"\$(\w+)", lambda m: w.env.get(str(m[1]), str(m[0])), a) for a in argv]
    for name in ("DATABASE_URL", "SECRET_KEY", "API_TOKEN", "ENVIRONMENT", "DAGSTER_WEBSERVER_URL",
                 "SERVICETITAN_SANDBOX_URL", "COLUMNS"):  # fmt: skip
        w.monkeypatch.setenv(name, w.env[name])
    for name in ("SERVICETITAN_CLIENT_ID", "SERVICETITAN_CLIENT_SECRET", "SERVICETITAN_APP_KEY"):
        w.monkeypatch.delenv(name, raising=False)
    clear_caches()
    user_input = None
    if args[:2] == ["connections", "add"] and "housecallpro" in args:
        account = next(a for a in DEMO_HCP_ACCOUNTS if a.company_id == args[args.index("--account-id") + 1])
        user_input = f"{account.api_key}\n"
    elif args[:2] == ["connections", "add"]:
        tenant = next(t for t in DEMO_TENANTS if t.tenant_id == args[args.index("--tenant-id") + 1])
        user_input = f"{tenant.client_id}\n{tenant.client_secret}\n{DEMO_APP_KEY}\n"
    result = CliRunner().invoke(app, args, input=user_input, catch_exceptions=False)
    assert result.exit_code == 0, f"{cmd}\n→ exit {result.exit_code}\n{result.output[-2000:]}"


def run_subprocess(cmd: Command, w: Guide, argv: list[str]) -> None:
    r = subprocess.run(argv, env=w.env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-1000:]}\n{r.stderr[-2000:]}"


def _psql() -> str:
    """The psql `si db shell` would use: of the server's version (the embedded server is PostgreSQL 18; a
    machine's own psql may be older, or missing)."""
    from integration_core.cli.main import _pg_tool

    return _pg_tool("psql")


def run_shell(cmd: Command, w: Guide) -> None:
    env = {**w.env, "PATH": f"{Path(_psql()).parent}:{w.env.get('PATH', '')}"}
    r = subprocess.run(["bash", "-c", cmd.text], env=env, capture_output=True, text=True, timeout=60, cwd=w.workdir)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-1000:]}\n{r.stderr[-1000:]}"


def run_sql(cmd: Command, w: Guide) -> None:
    r = subprocess.run(
        [_psql(), "-X", "-v", "ON_ERROR_STOP=1", "-c", cmd.text, w.env["DATABASE_URL"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, f"{cmd}\n{r.stderr}"


MAKE_TARGETS = set(re.findall(r"^([a-zA-Z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def check_make(cmd: Command, argv: list[str]) -> None:
    args = [a for a in argv[1:] if a != "|" and not a.startswith("-")]
    pipe = argv.index("|") if "|" in argv else len(argv)
    targets = [a for a in argv[1:pipe] if "=" not in a]
    variables = [a for a in argv[1:pipe] if "=" in a]
    assert targets and args, f"{cmd}: no target"
    for target in targets:
        assert target in MAKE_TARGETS, f"{cmd}: the Makefile has no target {target!r}"
        r = subprocess.run(["make", "-n", target, *variables], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{cmd}\n{r.stderr}"


DOCKER_COMPOSE_SUBCOMMANDS = {"logs", "ps", "exec", "restart", "up", "stats", "down"}


def check_docker(cmd: Command, argv: list[str]) -> None:
    if argv[1] == "stats":
        assert set(argv[2:]) <= {"--no-stream"}, cmd
        return
    assert argv[1] == "compose" and argv[2] in DOCKER_COMPOSE_SUBCOMMANDS, cmd
    rest = argv[3:]
    if argv[2] == "exec":
        service, inner = rest[0], rest[1:]
        assert service in SERVICES, f"{cmd}: no service {service!r}"
        if inner[0] == "psql":
            env = SERVICES["postgres"]["environment"]
            assert (
                inner[inner.index("-U") + 1] == "integration" and "POSTGRES_USER:-integration" in env["POSTGRES_USER"]
            )
            assert inner[inner.index("-d") + 1] == "integration" and "POSTGRES_DB:-integration" in env["POSTGRES_DB"]
        else:
            resolve(inner[0], inner[1:])
        return
    services = [a for a in rest if not a.startswith("-")]
    assert services, f"{cmd}: name the service(s)"
    for service in services:
        assert service in SERVICES, f"{cmd}: no service {service!r} in docker-compose.yml"


SHELL_TOOLS = {"echo", "ls", "grep", "psql"}


def test_the_guide_shows_commands() -> None:
    kinds = {c.text.split()[0] for c in COMMANDS if c.kind == "bash"}
    assert {"curl", "make", "uv", "docker"} <= kinds
    assert len(COMMANDS) > 80


def test_every_command_in_the_guide_works(guide: Guide) -> None:
    ran: dict[str, int] = {}
    for cmd in COMMANDS:
        _fail_the_routing(guide)
        if cmd.kind == "sql":
            run_sql(cmd, guide)
            ran["sql"] = ran.get("sql", 0) + 1
            continue
        argv = shlex.split(cmd.text, comments=True)
        head = argv[0]
        if head == "curl":
            run_curl(cmd, guide)
        elif argv[:3] == ["uv", "run", "si"]:
            run_si(cmd, guide, argv[3:])
        elif argv[:3] == ["uv", "run", "alembic"]:
            run_subprocess(cmd, guide, [str(VENV_BIN / "alembic"), *argv[3:]])
        elif head == "make":
            check_make(cmd, argv)
        elif head == "docker":
            check_docker(cmd, argv)
        elif head in SHELL_TOOLS:
            run_shell(cmd, guide)
        else:
            pytest.fail(f"{cmd}: a command of a kind this test does not exercise")
        ran[head] = ran.get(head, 0) + 1
    assert ran["curl"] >= 25 and ran["uv"] >= 20 and ran["sql"] >= 5, ran


ORIGINAL_GUIDE = Path(__file__).parent / "data" / "original-troubleshooting-guide.md"


def test_the_vendored_original_guide_is_the_reference_one() -> None:
    """The original guide travels with the tests (CI clones the repository alone); where the shared reference
    is next to the repository, the copy must be identical."""
    shared = SHARED / "reference" / "troubleshooting-guide.md"
    assert ORIGINAL_GUIDE.is_file()
    if shared.is_file():
        assert ORIGINAL_GUIDE.read_bytes() == shared.read_bytes()


def test_the_guide_keeps_the_original_headings() -> None:
    original = ORIGINAL_GUIDE

    def headings(markdown: str) -> list[str]:
        prose = FENCE.sub("", markdown)  # `# comment` lines inside code blocks are not headings
        return [line.strip() for line in prose.splitlines() if line.startswith("#")]

    ours = set(headings(DOC.read_text()))
    theirs = headings(original.read_text())
    missing = [h for h in theirs if h not in ours]
    assert missing == [], f"headings of the original guide missing here: {missing}"


def test_the_guide_names_real_endpoints() -> None:
    from integration_core.api.app import create_app

    paths = create_app(Settings(ENVIRONMENT="test")).openapi()["paths"]
    templates = [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p.rstrip("/")) + "/?$") for p in paths]
    shown = set(re.findall(r"localhost:8000(/api/[^\"' ?]*)", DOC.read_text()))
    shown |= {p for p in re.findall(r"`(?:GET|POST|PUT|PATCH) (/api/[^` ]*)`", DOC.read_text()) if "…" not in p}
    for path in sorted(shown):
        concrete = path.replace("$ROUTING_ID", str(uuid.uuid4())).replace("$COMPANY_ID", str(uuid.uuid4()))
        concrete = concrete.replace("{id}", str(uuid.uuid4())).replace("{tid}", str(uuid.uuid4()))
        assert path == "/api/health" or any(t.match(concrete) for t in templates), f"no such endpoint: {path}"
    assert yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # the compose file the guide points at
