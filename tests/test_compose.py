"""docker-compose.yml and the Dockerfile cannot run here (no Docker); they are validated by reading them:
every service's command (and healthcheck) exists in this project with the options it is given, every module
it loads is importable, every file it mounts or copies exists, and every environment variable it passes is a
known setting (an alias of `Settings`), one the Dagster instance reads (dagster.yaml `env:`), or one the
postgres / pgbouncer image documents. The service's own connections go through PgBouncer in transaction
pooling; migrations and Dagster's storage go to postgres directly."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration_core.settings import Settings
from tests.support.compose import SERVICES, VENV_BIN, resolve
from tests.support.config import ROOT

APP_SERVICES = [name for name, s in SERVICES.items() if "build" in s]
DOCKERFILE = (ROOT / "Dockerfile").read_text()

POSTGRES_IMAGE_VARS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
# edoburu/pgbouncer writes pgbouncer.ini from these (its entrypoint.sh)
PGBOUNCER_IMAGE_VARS = {
    "DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "AUTH_TYPE", "LISTEN_PORT", "POOL_MODE", "DEFAULT_POOL_SIZE",
    "MAX_DB_CONNECTIONS", "MAX_CLIENT_CONN", "ADMIN_USERS",
}  # fmt: skip
SERVICE_DB_CLIENTS = ("api", "user-code", "dagster-webserver", "dagster-daemon")
DAGSTER_SERVICES = ("user-code", "dagster-webserver", "dagster-daemon")


def _dagster_env_vars() -> set[str]:
    """Variables the Dagster instance config reads (`env: NAME` anywhere in dagster.yaml), plus DAGSTER_HOME."""
    found: set[str] = {"DAGSTER_HOME"}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "env" and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((ROOT / "dagster.yaml").read_text()))
    return found


SETTINGS_VARS = {f.alias for f in Settings.model_fields.values() if f.alias}
KNOWN_APP_VARS = SETTINGS_VARS | _dagster_env_vars()


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return list(cmd) if isinstance(cmd, list) else shlex.split(cmd)


def test_services_are_the_production_shape() -> None:
    assert set(SERVICES) == {
        "postgres", "pgbouncer", "migrate", "api", "dagster-webserver", "dagster-daemon", "user-code"
    }  # fmt: skip
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["pgbouncer"]["image"].startswith("edoburu/pgbouncer:")
    images = {SERVICES[name]["image"] for name in APP_SERVICES}
    assert images == {"service-integration:latest"}, "one image for every service but postgres"
    assert {SERVICES[name]["build"]["context"] for name in APP_SERVICES} == {"."}
    assert {SERVICES[name]["build"]["dockerfile"] for name in APP_SERVICES} == {"Dockerfile"}
    assert set(APP_SERVICES) == set(SERVICES) - {"postgres", "pgbouncer"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck_or_is_a_one_shot(name: str) -> None:
    service = SERVICES[name]
    if name == "migrate":
        assert service["restart"] == "no"
        return
    check = service["healthcheck"]["test"]
    assert check[0] in {"CMD", "CMD-SHELL"} and len(check) > 1


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_every_command_exists_with_its_options(name: str) -> None:
    argv = _command(SERVICES[name])
    resolve(argv[0], argv[1:])


def test_the_commands_are_the_intended_ones() -> None:
    assert _command(SERVICES["api"])[:5] == ["si", "api", "serve", "--host", "0.0.0.0"]
    assert _command(SERVICES["migrate"]) == ["si", "migrate"]
    assert _command(SERVICES["user-code"]) == [
        "dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "pipelines.definitions"
    ]  # fmt: skip
    assert _command(SERVICES["dagster-webserver"])[:5] == ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000"]
    assert _command(SERVICES["dagster-daemon"])[:2] == ["dagster-daemon", "run"]


def test_modules_and_files_the_commands_load_exist() -> None:
    for name in APP_SERVICES:
        argv = _command(SERVICES[name])
        for flag, value in itertools.pairwise(argv):
            if flag in ("-m", "--module-name"):
                assert importlib.util.find_spec(value) is not None, f"{name}: module {value} not importable"
            if flag in ("-w", "--workspace"):
                assert (ROOT / value).is_file(), f"{name}: {value} missing"
                assert "COPY deploy ./deploy" in DOCKERFILE or value.split("/")[0] in DOCKERFILE


def test_the_workspace_points_at_the_user_code_service() -> None:
    [location] = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())["load_from"]
    grpc = location["grpc_server"]
    code_server = _command(SERVICES["user-code"])
    assert grpc["host"] == "user-code"
    assert str(grpc["port"]) == code_server[code_server.index("-p") + 1]
    local = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    assert grpc["location_name"] == local["location_name"], "same code location name as the local stack"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_healthcheck_commands_exist(name: str) -> None:
    if "healthcheck" not in SERVICES[name]:
        return
    kind, *argv = SERVICES[name]["healthcheck"]["test"]
    if kind == "CMD-SHELL":
        assert argv[0].startswith("pg_isready ")  # shipped with the postgres and pgbouncer images
        return
    if argv[0] == "python":
        assert argv[1] == "-c"
        compile(argv[2], f"<{name} healthcheck>", "exec")
        for url in re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", argv[2]):
            port, path = url
            assert any(p.endswith(f":{port}") for p in SERVICES[name].get("ports", [])) or port in " ".join(
                _command(SERVICES[name])
            ), f"{name}: the healthcheck's port {port} is not the service's"
            if port == "8000":
                assert path == "/api/health/component/db"  # public, cheap, 503 when the database is down
        return
    resolve(argv[0], argv[1:])


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_every_env_var_is_a_known_setting_or_dagster_variable(name: str) -> None:
    env = SERVICES[name]["environment"]
    unknown = sorted(set(env) - KNOWN_APP_VARS)
    assert unknown == [], f"{name} passes variables nothing reads: {unknown}"


def test_postgres_env_is_the_images_own() -> None:
    assert set(SERVICES["postgres"]["environment"]) <= POSTGRES_IMAGE_VARS
    assert set(SERVICES["pgbouncer"]["environment"]) <= PGBOUNCER_IMAGE_VARS


def _host_port_db(url: str) -> tuple[str, str, str]:
    found = re.fullmatch(r"postgresql(?:\+psycopg2)?://[^@]+@([\w-]+):(\d+)/(.+)", url)
    assert found, url
    return found[1], found[2], found[3]


def test_pgbouncer_pools_transactions_in_front_of_postgres() -> None:
    bouncer = SERVICES["pgbouncer"]
    env = bouncer["environment"]
    assert env["POOL_MODE"] == "transaction"
    assert (env["DB_HOST"], str(env["DB_PORT"])) == ("postgres", "5432")
    assert env["DB_USER"] == "${POSTGRES_USER:-integration}"
    assert env["DB_PASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    assert env["AUTH_TYPE"] == "scram-sha-256"  # postgres:16's password_encryption
    assert env["DEFAULT_POOL_SIZE"] == env["MAX_DB_CONNECTIONS"]  # server connections: one bound, whatever asks
    assert bouncer["depends_on"]["postgres"]["condition"] == "service_healthy"
    check = bouncer["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL" and check[1].startswith(f"pg_isready -h 127.0.0.1 -p {env['LISTEN_PORT']} ")
    assert "ports" not in bouncer, "PgBouncer is reached on the compose network only"


@pytest.mark.parametrize("name", SERVICE_DB_CLIENTS)
def test_the_service_connects_through_pgbouncer(name: str) -> None:
    """The app's own database connections go to PgBouncer, with the engines set for transaction pooling."""
    env = SERVICES[name]["environment"]
    port = str(SERVICES["pgbouncer"]["environment"]["LISTEN_PORT"])
    assert _host_port_db(env["DATABASE_URL"]) == ("pgbouncer", port, "${POSTGRES_DB:-integration}")
    assert env["DATABASE_PGBOUNCER"] == "true"
    assert Settings(DATABASE_PGBOUNCER=env["DATABASE_PGBOUNCER"]).database_pgbouncer is True
    depends = SERVICES[name]["depends_on"]
    assert depends["pgbouncer"]["condition"] == "service_healthy"


def test_migrations_and_dagster_storage_go_to_postgres_directly() -> None:
    """Migrations (one connection, DDL, possibly several transactions on one session) and Dagster's storage
    (the webserver sets a session statement_timeout on its pooled connection) bypass PgBouncer."""
    migrate = SERVICES["migrate"]["environment"]
    assert _host_port_db(migrate["DATABASE_URL"]) == ("postgres", "5432", "${POSTGRES_DB:-integration}")
    assert migrate["DATABASE_PGBOUNCER"] == "false"
    assert "pgbouncer" not in SERVICES["migrate"]["depends_on"]
    for name in DAGSTER_SERVICES:
        assert _host_port_db(SERVICES[name]["environment"]["DAGSTER_POSTGRES_URL"])[:2] == ("postgres", "5432")


def test_dagster_services_write_the_instance_file_from_the_settings(tmp_path: Path) -> None:
    """The Dagster services' entrypoint rewrites $DAGSTER_HOME/dagster.yaml (run launcher, run cap) from the
    environment and then runs the service's command: run here as the image would, with a command that shows
    the file it was given."""
    for name in DAGSTER_SERVICES:
        assert SERVICES[name]["entrypoint"] == ["python", "-m", "integration_core.local.stack"]
        env = SERVICES[name]["environment"]
        assert env["DAGSTER_RUN_LAUNCHER"] == "${DAGSTER_RUN_LAUNCHER:-}"
        assert env["DAGSTER_MAX_CONCURRENT_RUNS"] == "${DAGSTER_MAX_CONCURRENT_RUNS:-}"
    for launcher, runs, cls in (("default", "7", "DefaultRunLauncher"), ("", "", "WarmForkRunLauncher")):
        home = tmp_path / (launcher or "unset")
        home.mkdir()
        (home / "dagster.yaml").write_text("# the image's copy, replaced\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_RUN_LAUNCHER": launcher,  # empty, as compose passes an unset variable: the default
            "DAGSTER_MAX_CONCURRENT_RUNS": runs,
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        }
        out = subprocess.run(
            [sys.executable, "-m", "integration_core.local.stack", "cat", str(home / "dagster.yaml")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout
        written = yaml.safe_load(out)
        assert written["run_launcher"]["class"] == cls
        default_cap = Settings.model_fields["dagster_max_concurrent_runs"].default
        assert written["concurrency"]["runs"]["max_concurrent_runs"] == int(runs or default_cap)
        assert written["storage"] == yaml.safe_load((ROOT / "dagster.yaml").read_text())["storage"]


def test_dagster_processes_share_the_instance() -> None:
    for name in DAGSTER_SERVICES:
        env = SERVICES[name]["environment"]
        assert env["DAGSTER_HOME"] == "/opt/dagster/home"
        assert env["DAGSTER_POSTGRES_URL"].startswith("postgresql+psycopg2://")
        assert env["DAGSTER_POSTGRES_URL"].endswith("@postgres:5432/dagster")
    assert "DAGSTER_POSTGRES_URL" in _dagster_env_vars()
    init = (ROOT / "deploy" / "postgres").glob("*.sql")
    assert any("CREATE DATABASE dagster" in p.read_text() for p in init), "the dagster database is created"


def test_secrets_come_from_the_environment_and_are_required() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("API_TOKEN", "POSTGRES_PASSWORD"):
        assert f"${{{secret}:?set {secret}}}" in text
    for name in APP_SERVICES:
        env = SERVICES[name]["environment"]
        assert env["API_TOKEN"] == "${API_TOKEN:?set API_TOKEN}"
        # the key or, during a rotation, the ring: both passed, an empty one is unset, the settings require one
        # (tests/test_settings.py: production with neither refuses to start)
        assert env["SECRET_KEY"] == "${SECRET_KEY:-}" and env["SECRET_KEYS"] == "${SECRET_KEYS:-}"
        assert env["ENVIRONMENT"].startswith("${ENVIRONMENT:-production}")  # refuses development defaults
    # every variable compose interpolates is listed in .env.example, with no value for the secrets
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert referenced <= set(example), f"missing from .env.example: {sorted(referenced - set(example))}"
    assert all(example[s] == "" for s in ("API_TOKEN", "SECRET_KEY", "SECRET_KEYS", "POSTGRES_PASSWORD"))


def test_depends_on_is_consistent() -> None:
    for name, service in SERVICES.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in SERVICES and dep != name
            assert cond["condition"] in {"service_healthy", "service_completed_successfully", "service_started"}
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy; it has no check"
    for name in SERVICE_DB_CLIENTS:
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_dockerfile() -> None:
    assert re.search(r"^FROM python:3\.11-slim\b", DOCKERFILE, re.M)
    assert "uv sync --frozen --no-dev" in DOCKERFILE
    assert "DAGSTER_HOME=/opt/dagster/home" in DOCKERFILE
    assert 'cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"' in DOCKERFILE
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _dest = line.split()[1:]
            for src in sources:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".data", ".env", ".git"} <= set(ignored)
