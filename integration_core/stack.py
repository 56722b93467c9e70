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
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from integration_core.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    port: int | None
    health_url: str | None


def _si(*args: str) -> list[str]:
    return [sys.executable, "-m", "integration_core.cli", *args]


def services(settings: Settings) -> list[Service]:
    sandbox_port = int(settings.servicetitan_sandbox_url.rsplit(":", 1)[-1].split("/")[0])
    return [
        Service(
            "sandbox",
            _si("sandbox", "serve", "--port", str(sandbox_port), "--office"),
            sandbox_port,
            f"http://127.0.0.1:{sandbox_port}/_sandbox/health",
        ),
        Service(
            "api",
            _si("api", "serve", "--port", str(settings.api_port)),
            settings.api_port,
            f"http://127.0.0.1:{settings.api_port}/api/health",
        ),
    ]


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(settings: Settings) -> dict[str, object] | None:
    path = _state_file(settings)
    if not path.exists():
        return None
    state: dict[str, object] = json.loads(path.read_text())
    return state


def status(settings: Settings) -> list[dict[str, object]]:
    state = read_state(settings)
    rows: list[dict[str, object]] = []
    if state is None:
        return rows
    sup = int(str(state["supervisor_pid"]))
    rows.append({"name": "supervisor", "pid": sup, "port": None, "running": _alive(sup), "healthy": None})
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
                "running": _alive(int(proc["pid"])),
                "healthy": healthy,
            }
        )
    return rows


def _wait_healthy(svc: Service, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if svc.health_url is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{svc.name} exited with code {proc.returncode}; see its log")
        try:
            if httpx.get(svc.health_url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{svc.name} did not become healthy within {timeout:.0f}s")


class Supervisor:
    """Starts services as children in their own process groups; stops all of them on exit or signal."""

    def __init__(self, settings: Settings, *, echo: bool) -> None:
        self.settings = settings
        self.echo = echo
        self.procs: list[tuple[Service, subprocess.Popen[bytes]]] = []
        self._stopping = False

    def start_all(self) -> None:
        logs = log_dir(self.settings)
        for svc in services(self.settings):
            log = open(logs / f"{svc.name}.log", "ab")  # noqa: SIM115 - owned by the child for its life
            proc = subprocess.Popen(  # noqa: S603 - our own argv
                svc.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self.procs.append((svc, proc))
            self._write_state()
            _wait_healthy(svc, proc)
            if self.echo:
                print(f"  {svc.name:<10} pid {proc.pid:<7} port {svc.port}  log {logs / (svc.name + '.log')}")

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "processes": [{**asdict(svc), "pid": p.pid} for svc, p in self.procs],
        }
        _state_file(self.settings).write_text(json.dumps(state, indent=2))

    def stop_all(self, timeout: float = 20) -> None:
        if self._stopping:
            return
        self._stopping = True
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in reversed(self.procs):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
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
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    # the supervisor is gone: make sure no child survived it (e.g. it was SIGKILLed)
    for proc in state.get("processes", []):  # type: ignore[attr-defined]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(proc["pid"]), signal.SIGTERM)
    _state_file(settings).unlink(missing_ok=True)
    return True
