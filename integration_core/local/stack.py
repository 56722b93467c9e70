"""The local stack without Docker: one supervisor that starts every service process, and stops them all.

`si run` (what `make run` calls) runs in the foreground: Ctrl-C or SIGTERM stops every process it started, and
nothing is left running. `si up` starts the same supervisor in the background (logs under `.data/logs/`);
`si down` stops it. `si stack status` shows each process with its pid and port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from integration_core.local.processes import group_alive, pid_alive
from integration_core.settings import PROJECT_ROOT, Settings


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    port: int | None
    health_url: str | None
    dagster: bool = False  # needs the instance's storage URL


def _si(*args: str) -> list[str]:
    return [sys.executable, "-m", "integration_core.cli", *args]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def housecallpro_sandbox_port(settings: Settings) -> int | None:
    """The port `si run` serves the Housecall Pro sandbox on, or None when HOUSECALLPRO_SANDBOX_URL is not local."""
    url = httpx.URL(settings.housecallpro_sandbox_url)
    if url.host not in ("127.0.0.1", "localhost"):
        return None
    return url.port or 80


def services(settings: Settings) -> list[Service]:
    """What `si run` starts, in order: each must be healthy before the next starts."""
    web, code = settings.dagster_webserver_port, settings.dagster_code_server_port
    grpc = ["--grpc-host", "127.0.0.1", "--grpc-port", str(code)]
    out: list[Service] = []
    if settings.servicetitan_env == "sandbox":
        port = int(settings.servicetitan_sandbox_url.rsplit(":", 1)[-1].split("/")[0])
        out.append(
            Service(
                "sandbox",
                [  # started by module: the product package never imports the sandbox
                    sys.executable,
                    "-m",
                    "sandboxes.servicetitan",
                    "--port",
                    str(port),
                    "--office" if settings.sandbox_office_enabled else "--no-office",
                    "--office-pace",
                    str(settings.sandbox_office_pace_seconds),
                    "--log-level",
                    settings.log_level,
                ],
                port,
                f"http://127.0.0.1:{port}/_sandbox/health",
            )
        )
    hcp = housecallpro_sandbox_port(settings)
    if hcp is not None:
        out.append(
            Service(
                "housecallpro-sandbox",
                [  # by module, like the ServiceTitan sandbox: the product package never imports it
                    sys.executable,
                    "-m",
                    "sandboxes.housecallpro",
                    "--port",
                    str(hcp),
                    "--office" if settings.sandbox_office_enabled else "--no-office",
                    "--office-pace",
                    str(settings.sandbox_office_pace_seconds),
                    "--log-level",
                    settings.log_level.lower(),
                ],
                hcp,
                f"http://127.0.0.1:{hcp}/_sandbox/health",
            )
        )
    return [
        *out,
        Service(
            "api",
            _si("api", "serve", "--port", str(settings.api_port)),
            settings.api_port,
            f"http://127.0.0.1:{settings.api_port}/api/health/component/db",
        ),
        Service(
            "dagster-code",
            [
                _bin("dagster"),
                "code-server",
                "start",
                "-h",
                "127.0.0.1",
                "-p",
                str(code),
                "-m",
                "pipelines.definitions",
            ],
            code,
            None,
            dagster=True,
        ),
        Service(
            "dagster-webserver",
            [_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(web), *grpc],
            web,
            f"http://127.0.0.1:{web}/server_info",
            dagster=True,
        ),
        Service("dagster-daemon", [_bin("dagster-daemon"), "run", *grpc], None, None, dagster=True),
    ]


# Dagster's stock launcher (DAGSTER_RUN_LAUNCHER=default): the code server spawns each run worker as a new
# `dagster api execute_run` process. It takes no config.
DEFAULT_RUN_LAUNCHER: dict[str, str] = {
    "module": "dagster._core.launcher.default_run_launcher",
    "class": "DefaultRunLauncher",
}


def dagster_instance_config(settings: Settings, source: Path = PROJECT_ROOT / "dagster.yaml") -> dict[str, Any]:
    """The repository's dagster.yaml with the choices the settings make: the run launcher
    (`DAGSTER_RUN_LAUNCHER`) and the global run cap (`DAGSTER_MAX_CONCURRENT_RUNS`)."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    if settings.dagster_run_launcher == "default":
        config["run_launcher"] = dict(DEFAULT_RUN_LAUNCHER)
    config["concurrency"]["runs"]["max_concurrent_runs"] = settings.dagster_max_concurrent_runs
    return config


def write_dagster_yaml(settings: Settings, home: Path) -> Path:
    """Write `<home>/dagster.yaml`, the instance file every Dagster process reads, from the settings."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    header = (
        "# Written by integration_core.local.stack from the repository's dagster.yaml (edit that one) with\n"
        f"# DAGSTER_RUN_LAUNCHER={settings.dagster_run_launcher}, "
        f"DAGSTER_MAX_CONCURRENT_RUNS={settings.dagster_max_concurrent_runs}.\n"
    )
    _write_atomically(path, header + yaml.safe_dump(dagster_instance_config(settings), sort_keys=False))
    return path


def dagster_home(settings: Settings) -> Path:
    """`.data/dagster_home` holding the instance file (rewritten from dagster.yaml and the settings on every start)."""
    home = settings.data_dir / "dagster_home"
    write_dagster_yaml(settings, home)
    return home


def dagster_env(settings: Settings) -> dict[str, str]:
    """Environment of every Dagster process: the instance (DAGSTER_HOME) and its storage."""
    from integration_core.db.engine import dagster_storage_url

    return {"DAGSTER_HOME": str(dagster_home(settings)), "DAGSTER_POSTGRES_URL": dagster_storage_url(settings)}


def run_dir(settings: Settings) -> Path:
    d = settings.data_dir / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def log_dir(settings: Settings) -> Path:
    d = settings.data_dir / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _state_file(settings: Settings) -> Path:
    return run_dir(settings) / "stack.json"


def _write_atomically(path: Path, text: str) -> None:
    """Readers (`si status`, `si up` polling) never see a half-written file: write a sibling, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_state(settings: Settings) -> dict[str, object] | None:
    path = _state_file(settings)
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return state


def status(settings: Settings) -> list[dict[str, object]]:
    state = read_state(settings)
    rows: list[dict[str, object]] = []
    if state is None:
        return rows
    sup = int(str(state["supervisor_pid"]))
    rows.append({"name": "supervisor", "pid": sup, "port": None, "running": pid_alive(sup), "healthy": None})
    for proc in state["processes"]:  # type: ignore[attr-defined]
        healthy: bool | None = None
        if proc.get("health_url"):
            try:
                healthy = httpx.get(proc["health_url"], timeout=2).status_code == 200
            except httpx.HTTPError:
                healthy = False
        rows.append(
            {
                "name": proc["name"],
                "pid": proc["pid"],
                "port": proc["port"],
                "running": pid_alive(int(proc["pid"])),
                "healthy": healthy,
            }
        )
    return rows


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _daemons_heartbeating(settings: Settings) -> bool:
    """Every required Dagster daemon (sensors, schedules, run queue, ...) has heartbeated: the stack can work."""
    from integration_core.operations.dagster_client import DagsterClient, DagsterUnavailable

    try:
        statuses = DagsterClient(f"http://127.0.0.1:{settings.dagster_webserver_port}", timeout=2).daemon_statuses()
    except DagsterUnavailable:
        return False
    return bool(statuses) and all(s.healthy is True for s in statuses if s.required)


# what pipelines/launcher.py's WarmForkRunLauncher prints to the daemon's log once its forkserver has imported the
# code location (or failed to: every launch then fails with the import error, which the log names)
LAUNCHER_READY = "WarmForkRunLauncher: forkserver ready"
LAUNCHER_FAILED = "WarmForkRunLauncher: preload module(s)"


def _launcher_warm(log: Path, offset: int) -> bool:
    """Whether the daemon's run launcher has finished warming up since this start (its log from `offset` on)."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    return LAUNCHER_READY in text or LAUNCHER_FAILED in text


def _wait_healthy(
    svc: Service,
    proc: subprocess.Popen[bytes],
    settings: Settings | None = None,
    timeout: float = 120,
    log: tuple[Path, int] | None = None,
) -> None:
    """Until the service answers. The daemon: its daemons heartbeat and — with the warm-fork launcher — the
    launcher's forkserver has imported the code location, so that the first runs start at once instead of
    queueing behind that import (seconds on a small machine) while the stack already reports itself up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{svc.name} exited with code {proc.returncode}; see its log")
        if svc.health_url is not None:
            try:
                if httpx.get(svc.health_url, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
        elif svc.port is not None:
            if _port_open(svc.port):
                return
        elif svc.name == "dagster-daemon" and settings is not None:
            warm = settings.dagster_run_launcher != "warmfork" or log is None or _launcher_warm(*log)
            if warm and _daemons_heartbeating(settings):
                return
            time.sleep(0.5)
        else:
            time.sleep(1.0)  # nothing to probe: alive after a moment is enough
            if proc.poll() is None:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{svc.name} did not become healthy within {timeout:.0f}s")


def _wire_webhooks(settings: Settings, *, echo: bool) -> None:
    from integration_core.webhooks.local import wire_local_sandboxes

    try:
        wired = wire_local_sandboxes(settings)
    except Exception as exc:  # webhooks are an accelerator: the status pull still brings every change
        print(f"  webhooks: not wired ({type(exc).__name__}); status changes arrive with the pull")
        return
    if echo and wired:
        ok = sum(w.ok for w in wired)
        print(f"  webhooks           {ok}/{len(wired)} sandbox connection(s) post signed webhooks to the API")


class Supervisor:
    """Starts services as children in their own process groups; stops all of them on exit or signal."""

    def __init__(self, settings: Settings, *, echo: bool) -> None:
        self.settings = settings
        self.echo = echo
        self.procs: list[tuple[Service, subprocess.Popen[bytes]]] = []
        self._stopping = False

    def start_all(self) -> None:
        logs = log_dir(self.settings)
        base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        extra = dagster_env(self.settings)
        for svc in services(self.settings):
            log_path = logs / f"{svc.name}.log"
            log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its life
            offset = log_path.stat().st_size
            env = {**base_env, **extra} if svc.dagster else base_env
            proc = subprocess.Popen(  # noqa: S603 - our own argv
                svc.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=PROJECT_ROOT,
                env=env,
            )
            self.procs.append((svc, proc))
            self._write_state()
            _wait_healthy(svc, proc, self.settings, log=(log_path, offset))
            if self.echo:
                print(f"  {svc.name:<18} pid {proc.pid:<7} port {svc.port}  log {logs / (svc.name + '.log')}")
            if svc.name == "api":  # the sandboxes post signed webhooks to this API (docs/webhooks.md)
                _wire_webhooks(self.settings, echo=self.echo)

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "processes": [{**asdict(svc), "pid": p.pid} for svc, p in self.procs],
        }
        _write_atomically(_state_file(self.settings), json.dumps(state, indent=2))

    def _end_dagster_runs(self, timeout: float = 20) -> None:
        """Terminate in-progress runs through the webserver before its processes go: they end CANCELED (and
        their leases are released by the engine's fencing and reconcile), not as failures that raise alerts."""
        from integration_core.operations.dagster_client import DagsterClient, DagsterUnavailable

        if not any(svc.name == "dagster-webserver" and p.poll() is None for svc, p in self.procs):
            return
        client = DagsterClient(f"http://127.0.0.1:{self.settings.dagster_webserver_port}", timeout=5)
        active = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
        try:
            runs = client.runs(active)
            if not runs:
                return
            client.terminate_runs([r.run_id for r in runs])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and client.runs((*active, "CANCELING")):
                time.sleep(0.5)
        except DagsterUnavailable:
            pass

    def stop_all(self, timeout: float = 20) -> None:
        if self._stopping:
            return
        self._stopping = True
        # the daemon first (no new runs), then end the runs in progress, then everything else. Only the daemon
        # process itself is signalled here: its run workers share its process group and must live until they
        # have been cancelled (ended CANCELED, not failed by a stray SIGTERM); the group goes with the rest.
        for svc, proc in self.procs:
            if svc.name == "dagster-daemon" and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
        self._end_dagster_runs()
        for _, proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):  # a group whose leader has exited may still have members
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in reversed(self.procs):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # members that outlived their group leader (run workers of the daemon): same deadline, then SIGKILL
        for _, proc in self.procs:
            while group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        _state_file(self.settings).unlink(missing_ok=True)

    def wait(self) -> int:
        """Block until a signal arrives or a child dies; returns the exit code for the supervisor."""
        while True:
            for svc, proc in self.procs:
                if proc.poll() is not None:
                    print(f"{svc.name} exited with code {proc.returncode}; stopping the stack", file=sys.stderr)
                    return 1
            time.sleep(0.5)


def stop_background(settings: Settings, timeout: float = 30) -> bool:
    state = read_state(settings)
    if state is None:
        return False
    pid = int(str(state["supervisor_pid"]))
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    # the supervisor is gone: make sure no child survived it (e.g. it was SIGKILLed)
    for proc in state.get("processes", []):  # type: ignore[attr-defined]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(proc["pid"]), signal.SIGTERM)
    _state_file(settings).unlink(missing_ok=True)
    return True


class LocalStack:
    """A whole stack (`si run`) in its own data directory on free ports: for end-to-end tests and benchmarks.

    `env` adds to this process's environment (DATABASE_URL, API_TOKEN, …); ports and DATA_DIR are chosen here.
    `embedded=True` drops DATABASE_URL / DAGSTER_DATABASE_URL inherited from this process, so that the stack runs
    on the embedded server in its data directory, as `make run` does on a fresh machine.
    """

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, *, embedded: bool = False) -> None:
        from integration_core.local.http_server import free_port

        inherited = dict(os.environ)
        if embedded:
            for name in ("DATABASE_URL", "DAGSTER_DATABASE_URL"):
                inherited.pop(name, None)
        self.data_dir = data_dir
        self.ports = {name: free_port() for name in ("api", "sandbox", "hcp_sandbox", "web", "code")}
        self.env = {
            **inherited,
            "DATA_DIR": str(data_dir),
            "API_PORT": str(self.ports["api"]),
            "SERVICETITAN_SANDBOX_URL": f"http://127.0.0.1:{self.ports['sandbox']}",
            "HOUSECALLPRO_SANDBOX_URL": f"http://127.0.0.1:{self.ports['hcp_sandbox']}",
            "DAGSTER_WEBSERVER_PORT": str(self.ports["web"]),
            "DAGSTER_CODE_SERVER_PORT": str(self.ports["code"]),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sandbox']}"

    @property
    def housecallpro_sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['hcp_sandbox']}"

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}"

    def start(self, timeout: float = 180) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "si-run.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "integration_core.cli", "run"],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        state = self.data_dir / "run" / "stack.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"si run exited with {self.proc.returncode}: see {self.data_dir}/si-run.log")
            if state.exists():
                procs = json.loads(state.read_text()).get("processes", [])  # written atomically
                if len(procs) >= 5 and "is up" in (self.data_dir / "si-run.log").read_text(errors="replace"):
                    return
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"the stack did not come up within {timeout:.0f}s: see {self.data_dir}/si-run.log")

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def container_entrypoint(argv: list[str]) -> None:
    """Entrypoint of the Dagster services in the image (docker-compose.yml): `python -m integration_core.local.stack
    COMMAND...` rewrites $DAGSTER_HOME/dagster.yaml from the settings (run launcher, run cap), then becomes COMMAND."""
    from integration_core.settings import get_settings

    if not argv:
        raise SystemExit("usage: python -m integration_core.local.stack COMMAND [ARGS...]")
    settings = get_settings()
    if settings.dagster_home is None:
        raise SystemExit("DAGSTER_HOME is not set: the Dagster instance directory to write dagster.yaml into")
    write_dagster_yaml(settings, settings.dagster_home)
    os.execvp(argv[0], argv)  # noqa: S606 - the container's own command


if __name__ == "__main__":
    container_entrypoint(sys.argv[1:])
