"""A run launcher that forks run workers from a warm process instead of starting Python from scratch.

Dagster's `DefaultRunLauncher` asks the code server to *spawn* a run worker: a new interpreter that imports
Dagster and the code location before it does any work (1.5-2.5 s of CPU each; measured in the e2e bench,
ten companies starting at once queued behind each other for half a minute on two cores). This launcher keeps a
`multiprocessing` forkserver in the launching process (the daemon's run queue) that has already imported the
code location (`preload_modules`); each run worker is a fork of it and starts executing in tens of
milliseconds. What runs inside the worker is exactly what `dagster api execute_run` runs.

Termination does not depend on where the worker lives: `terminate` marks the run CANCELING (as every launcher
does) and the worker, which watches its own run's status, interrupts itself; on the same host the launcher also
signals it so it stops at once. Either way the run ends CANCELED. Run monitoring asks `check_run_worker_health`:
a worker that died without ending its run (SIGKILL, OOM) is reported FAILED, the routings it leased are
released at once (integration_core/delivery/leases.py), and the crash-only run retry policy re-launches it.

The preload is checked, never assumed: `multiprocessing`'s forkserver swallows an ImportError of a preload module
and carries on, so every run worker would import the code location from scratch again (the slow starts this launcher
exists to avoid) without a word. At start-up (the daemon builds the launcher) and before the first launch, a first
child of the forkserver reports which preload modules are not imported; if any, the launcher raises `PreloadFailed`
naming each module with its import error, logs it, and refuses every launch (the run fails with that message) until
the import is fixed and the daemon restarted — or the stock launcher is chosen (`DAGSTER_RUN_LAUNCHER=default`,
docs/scaling.md).

Config (`dagster.yaml`):

    run_launcher:
      module: pipelines.launcher
      class: WarmForkRunLauncher
      config:
        preload_modules: [pipelines.worker_preload]   # the code location and what a run worker imports
        cancel_poll_seconds: 5.0
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from dagster import Array, Field, Float, Noneable, String
from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from integration_core.delivery.runs import release_held
from integration_core.local.processes import pid_alive
from integration_core.settings import get_settings

if TYPE_CHECKING:
    from dagster._core.storage.dagster_run import DagsterRun

log = logging.getLogger(__name__)

PID_TAG = "si/run_worker_pid"
HOST_TAG = "si/run_worker_host"
DEFAULT_PRELOAD = ("pipelines.worker_preload",)
WORKER_POOL = {"pool_size": 1, "max_overflow": 1}  # a run worker's Dagster storage connections (pipelines/storage.py)


def _host() -> str:
    return socket.gethostname()


def _watch_for_cancel(instance: Any, run_id: str, poll_seconds: float, done: threading.Event) -> None:
    """Interrupt the main thread once the run is marked CANCELING (by `terminate` from any process or host).
    Shares the run's instance: a second one would connect to Dagster's storage again at every run start."""
    from dagster import DagsterRunStatus
    from dagster._utils import send_interrupt

    stopping = {DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED}
    while not done.wait(poll_seconds):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in stopping:
            send_interrupt()
            return


def worker_instance_ref(ref: Any) -> Any:
    """The instance a run worker opens: Postgres storage that does not check for (and create) Dagster's tables —
    the daemon launching the worker has them already; that check is a catalog query per storage at every run
    start, and in a burst of short runs it was a large share of the server's work — and, with the pooled storage
    (pipelines/storage.py), a pool the size of a run (`WORKER_POOL`): one connection kept for its event writes
    and cancel watch, which take turns, and one more while Dagster nests a query inside another (the event log
    checks an index in the middle of a write) — the two the connection budget counts per run
    (integration_core/db/budget.py)."""
    import yaml
    from dagster._serdes import ConfigurableClassData

    data = ref.storage_data
    if data is None or data.class_name not in ("DagsterPostgresStorage", "PooledPostgresStorage"):
        return ref
    config = yaml.safe_load(data.config_yaml) or {}
    config["should_autocreate_tables"] = False
    if data.class_name == "PooledPostgresStorage":
        config.update(WORKER_POOL)
    return ref._replace(storage_data=ConfigurableClassData(data.module_name, data.class_name, yaml.safe_dump(config)))


class PreloadFailed(RuntimeError):
    """A preload module is not imported in the forkserver: run workers would start slowly, so none is launched."""


def _report_preloaded(modules: Sequence[str], conn: Connection) -> None:
    """The warm-up child (a fork of the forkserver): send back which preload modules the forkserver lacks."""
    conn.send([m for m in modules if m not in sys.modules])
    conn.close()


def _import_error(module: str) -> str:
    """Why `module` does not import (tried in this process, where the error is not swallowed)."""
    import importlib
    import traceback

    try:
        importlib.import_module(module)
    except BaseException as exc:  # any error is the answer
        return "".join(traceback.format_exception_only(exc)).strip()
    return "it imports in the launching process but not in the forkserver (a different sys.path or environment?)"


def check_preloaded(ctx: Any, modules: Sequence[str], *, timeout: float = 600.0) -> None:
    """Start the forkserver if needed and make sure it imported every module of `modules`; PreloadFailed names
    each one that it did not, with its import error."""
    receive, send = multiprocessing.Pipe(duplex=False)
    try:
        child = ctx.Process(target=_report_preloaded, args=(list(modules), send), name="si-forkserver-warm-up")
        child.start()
    except Exception as exc:  # the forkserver itself died while importing (an error other than ImportError)
        reasons = "; ".join(f"{m}: {_import_error(m)}" for m in modules)
        raise PreloadFailed(f"the run launcher's forkserver did not start ({type(exc).__name__}): {reasons}") from exc
    finally:
        send.close()
    missing: list[str] | None = receive.recv() if receive.poll(timeout) else None
    receive.close()
    child.join(timeout)
    if missing is None:
        raise PreloadFailed(f"the forkserver's first child did not report its preloaded modules ({modules})")
    if missing:
        reasons = "; ".join(f"{m}: {_import_error(m)}" for m in missing)
        raise PreloadFailed(
            f"WarmForkRunLauncher: preload module(s) {', '.join(missing)} failed to import in the forkserver "
            f"({reasons}). Every run worker would import the code location from scratch (slow starts), so no run is "
            "launched: fix the import and restart the daemon, or use Dagster's stock launcher "
            "(DAGSTER_RUN_LAUNCHER=default)."
        )


def run_worker(run_id: str, serialized_instance_ref: str, cancel_poll_seconds: float) -> None:
    """Body of a forked run worker: `dagster api execute_run`, minus the interpreter start-up."""
    from dagster import DagsterInstance
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import InstanceRef
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts, setup_interrupt_handlers

    signal.signal(signal.SIGINT, signal.default_int_handler)
    setup_interrupt_handlers()  # SIGTERM behaves as SIGINT, as in `dagster api execute_run`
    instance_ref = deserialize_value(serialized_instance_ref, InstanceRef)
    done = threading.Event()
    with capture_interrupts(), DagsterInstance.from_ref(instance_ref) as instance:
        watcher = threading.Thread(
            target=_watch_for_cancel,
            args=(instance, run_id, cancel_poll_seconds, done),
            name="si-cancel-watch",
            daemon=True,
        )
        watcher.start()
        try:
            _execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=False)
        finally:
            done.set()


class WarmForkRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a process forked from a forkserver that has the code location imported."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        preload_modules: Sequence[str] = DEFAULT_PRELOAD,
        cancel_poll_seconds: float = 5.0,
        start_method: str | None = None,
    ) -> None:
        self._inst_data = inst_data
        self._preload = list(preload_modules)
        self._cancel_poll_seconds = cancel_poll_seconds
        self._start_method = start_method or "forkserver"
        self._ctx: Any = None
        self._ctx_lock = threading.Lock()
        self._warm_lock = threading.Lock()
        self._warmed = False
        self._preload_error: PreloadFailed | None = None
        self._workers: dict[str, multiprocessing.process.BaseProcess] = {}
        # the run queue launches from several threads at once (dequeue_use_threads)
        self._workers_lock = threading.Lock()
        super().__init__()  # type: ignore[no-untyped-call]

    # -- ConfigurableClass -------------------------------------------------------------------------------
    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "preload_modules": Field(
                Array(String),
                is_required=False,
                default_value=list(DEFAULT_PRELOAD),
                description="Modules the forkserver imports once; every run worker starts with them loaded.",
            ),
            "cancel_poll_seconds": Field(
                Float,
                is_required=False,
                default_value=1.0,
                description="How often a run worker checks whether its run was marked CANCELING.",
            ),
            "start_method": Field(
                Noneable(String),
                is_required=False,
                default_value=None,
                description="multiprocessing start method (default forkserver; spawn for comparison).",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, **config_value)

    # -- the forkserver ----------------------------------------------------------------------------------
    def _context(self) -> Any:
        with self._ctx_lock:
            if self._ctx is None:
                ctx = multiprocessing.get_context(self._start_method)
                if self._start_method == "forkserver":
                    ctx.set_forkserver_preload(self._preload)
                self._ctx = ctx
            return self._ctx

    def warm_up(self) -> None:
        """Start the forkserver, wait until it has imported `preload_modules` and check that it has (a first child
        reports what is missing). Once per launcher; logged to the daemon's log with the time it took. Raises
        PreloadFailed — now and at every later call — when a preload module did not import."""
        with self._warm_lock:
            if not self._warmed:
                started = time.monotonic()
                try:
                    if self._start_method == "forkserver":
                        check_preloaded(self._context(), self._preload)
                    print(
                        f"WarmForkRunLauncher: forkserver ready ({', '.join(self._preload)} imported) "
                        f"in {time.monotonic() - started:.1f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                except PreloadFailed as exc:
                    self._preload_error = exc
                    log.error("%s", exc)
                    print(f"ERROR {exc}", file=sys.stderr, flush=True)
                finally:
                    self._warmed = True
        if self._preload_error is not None:
            raise self._preload_error

    def _warm_up_in_background(self) -> None:
        with contextlib.suppress(PreloadFailed):  # logged by warm_up; every launch raises it
            self.warm_up()

    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        # Only the daemon launches runs (the webserver, code server and run workers merely enqueue or
        # terminate them): start the forkserver there as soon as the daemon builds its launcher. Dagster builds
        # it lazily, at the first launch (or when run monitoring checks a run in progress after a restart), so
        # the first launch still waits for the imports; every later one finds them done.
        if Path(sys.argv[0]).name == "dagster-daemon":
            threading.Thread(target=self._warm_up_in_background, name="si-forkserver-warm-up", daemon=True).start()

    # -- RunLauncher -------------------------------------------------------------------------------------
    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._serdes import serialize_value

        self.warm_up()  # PreloadFailed: the run fails to launch with the module named, instead of starting slowly
        run = context.dagster_run
        self._forget_finished()
        proc = self._context().Process(
            target=run_worker,
            args=(
                run.run_id,
                serialize_value(worker_instance_ref(self._instance.get_ref())),
                self._cancel_poll_seconds,
            ),
            name=f"dagster-run-{run.run_id[:8]}",
            daemon=False,
        )
        proc.start()
        with self._workers_lock:
            self._workers[run.run_id] = proc
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(proc.pid), HOST_TAG: _host()})

    def _forget_finished(self) -> None:
        with self._workers_lock:
            finished = [run_id for run_id, proc in self._workers.items() if not proc.is_alive()]
            for run_id in finished:
                self._workers.pop(run_id).join(0)

    def _worker_pid(self, run: DagsterRun) -> int | None:
        if run.tags.get(HOST_TAG) != _host() or not run.tags.get(PID_TAG):
            return None
        return int(run.tags[PID_TAG])

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = self._worker_pid(run)
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)  # the worker maps it to an interrupt and ends the run CANCELED
        # elsewhere (another host), the worker sees CANCELING within cancel_poll_seconds
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if PID_TAG not in run.tags:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker recorded yet")
        pid = self._worker_pid(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"run worker is on {run.tags.get(HOST_TAG)}")
        if pid_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        # the worker is dead on this host: nothing more can leave it, so what it held goes back now, not when
        # its leases expire (requests it had in flight are looked up a request timeout later)
        try:
            released = release_held(get_settings(), run.run_id, holder_stopped=True)
        except Exception as exc:  # never let a release problem hide the dead worker; the leases will expire
            log.error("releasing the routings of run %s failed: %s", run.run_id, type(exc).__name__)
            released = None
        note = f"; {released.total} routing(s) it held released" if released and released.total else ""
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone{note}")

    def join(self, timeout: float = 30) -> None:
        with self._workers_lock:
            workers = list(self._workers.values())
        for proc in workers:
            proc.join(timeout)
