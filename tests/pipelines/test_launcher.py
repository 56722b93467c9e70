"""WarmForkRunLauncher: configured by dagster.yaml, and its answers to run monitoring. Launching, forking and
cancelling with the real daemon are covered by tests/e2e/test_stack.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.launcher.base import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

from pipelines.launcher import HOST_TAG, PID_TAG, WarmForkRunLauncher, _host

ROOT = Path(__file__).resolve().parents[2]


def _launcher_config() -> dict[str, object]:
    config: dict[str, object] = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_launcher"]
    return config


def test_dagster_yaml_selects_the_warm_fork_launcher() -> None:
    with dg.instance_for_test(overrides={"run_launcher": _launcher_config()}) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmForkRunLauncher)
        assert launcher.supports_check_run_worker_health
        assert launcher._preload == ["pipelines.worker_preload"]


def _run(tags: dict[str, str]) -> DagsterRun:
    return DagsterRun(job_name="deliver_routings", run_id="0" * 8 + "-0000-0000-0000-000000000000", tags=tags)


def test_run_worker_health_as_run_monitoring_sees_it(db: object) -> None:
    launcher = WarmForkRunLauncher()
    assert launcher.check_run_worker_health(_run({})).status == WorkerStatus.UNKNOWN
    alive = {PID_TAG: str(os.getpid()), HOST_TAG: _host()}
    assert launcher.check_run_worker_health(_run(alive)).status == WorkerStatus.RUNNING
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = launcher.check_run_worker_health(_run({PID_TAG: str(gone.pid), HOST_TAG: _host()}))
    assert dead.status == WorkerStatus.FAILED and str(gone.pid) in (dead.msg or "")
    elsewhere = {PID_TAG: str(os.getpid()), HOST_TAG: "another-host"}
    assert launcher.check_run_worker_health(_run(elsewhere)).status == WorkerStatus.UNKNOWN


def test_run_workers_do_not_check_for_dagster_tables(tmp_path: Path) -> None:
    """The daemon that launches a worker has Dagster's tables: the worker's storage skips that check (a catalog
    query over a new connection per storage, at every run start)."""
    import yaml
    from dagster._core.instance import InstanceRef

    from pipelines.launcher import worker_instance_ref

    (tmp_path / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url: postgresql+psycopg2://postgres@127.0.0.1:1/dagster\n"
    )
    ref = InstanceRef.from_dir(str(tmp_path))
    worker = worker_instance_ref(ref)
    assert yaml.safe_load(worker.storage_data.config_yaml) == {
        "postgres_url": "postgresql+psycopg2://postgres@127.0.0.1:1/dagster",
        "should_autocreate_tables": False,
    }
    assert worker.run_launcher_data == ref.run_launcher_data  # everything else as it was


def test_run_workers_get_a_run_sized_pool_of_the_pooled_storage(tmp_path: Path) -> None:
    """dagster.yaml's pooled storage (pipelines/storage.py): a run worker keeps one connection and may open one more
    (the connection budget's two per run), and skips the table check; the daemon's pool is left as configured."""
    import yaml
    from dagster._core.instance import InstanceRef

    from pipelines.launcher import WORKER_POOL, worker_instance_ref

    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    ref = InstanceRef.from_dir(str(tmp_path))
    assert ref.storage_data is not None and ref.storage_data.class_name == "PooledPostgresStorage"
    daemon = yaml.safe_load(ref.storage_data.config_yaml)
    assert (daemon["pool_size"], daemon["max_overflow"]) == (2, 10)
    worker = yaml.safe_load(worker_instance_ref(ref).storage_data.config_yaml)
    assert worker == {**daemon, **WORKER_POOL, "should_autocreate_tables": False}
    assert WORKER_POOL == {"pool_size": 1, "max_overflow": 1}


def test_parallel_launches_forget_finished_workers_safely() -> None:
    """The run queue launches from several threads at once: forgetting finished workers must not race (a run
    failed to launch with a KeyError when two threads removed the same finished worker)."""
    import threading
    import time

    class FinishedWorker:
        """A finished worker process whose liveness check takes a moment (a waitpid), as a real one may."""

        def is_alive(self) -> bool:
            time.sleep(0.001)
            return False

        def join(self, timeout: float | None = None) -> None:
            pass

    launcher = WarmForkRunLauncher()
    for i in range(40):
        launcher._workers[f"run-{i}"] = FinishedWorker()  # type: ignore[assignment]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def forget() -> None:
        start.wait()
        try:
            for _ in range(20):
                launcher._forget_finished()
        except BaseException as exc:  # any error is the failure
            errors.append(exc)

    threads = [threading.Thread(target=forget) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and launcher._workers == {}


# --- the preload is checked at start-up ------------------------------------------------------------------------------
# Each case runs in a fresh interpreter: a process has one forkserver, started with the first launcher's preload.

_WARM_UP = """
import sys
from pipelines.launcher import PreloadFailed, WarmForkRunLauncher

launcher = WarmForkRunLauncher(preload_modules=sys.argv[1:])
for attempt in range(2):  # the failure is kept: a second call (every launch) raises it again
    try:
        launcher.warm_up()
    except PreloadFailed as exc:
        print(f"PreloadFailed: {exc}")
    else:
        print("ready")
"""


def _warm_up(*modules: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", _WARM_UP, *modules], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )


def test_a_preload_module_that_does_not_import_fails_loudly(tmp_path: Path) -> None:
    """The forkserver swallows an ImportError of a preload module (every run worker would then start from
    scratch, slowly, without a word): the launcher names the module and why, and refuses to launch."""
    (tmp_path / "si_broken_preload.py").write_text("import si_dependency_that_is_not_installed\n")
    r = _warm_up("json", "si_broken_preload", "pipelines.no_such_module", pythonpath=tmp_path)
    failures = [line for line in r.stdout.splitlines() if line.startswith("PreloadFailed: ")]
    assert len(failures) == 2, r.stdout + r.stderr
    assert failures[0] == failures[1]
    message = failures[0]
    assert "si_broken_preload" in message and "No module named 'si_dependency_that_is_not_installed'" in message
    assert "pipelines.no_such_module" in message and "No module named 'pipelines.no_such_module'" in message
    assert "json" not in message.split("failed to import")[0]  # only the modules that failed are named
    assert "DAGSTER_RUN_LAUNCHER=default" in message
    assert "si_broken_preload" in r.stderr  # and the daemon's log says it at start-up


def test_the_configured_preload_imports_and_is_checked() -> None:
    r = _warm_up("pipelines.worker_preload")
    assert r.stdout.splitlines() == ["ready", "ready"], r.stdout + r.stderr
    assert "forkserver ready (pipelines.worker_preload imported)" in r.stderr


def test_a_launch_after_a_failed_preload_raises_the_failure() -> None:
    from dagster._core.launcher.base import LaunchRunContext

    from pipelines.launcher import PreloadFailed

    # this process's forkserver (whichever preload started it) has no such module: the first launch checks, fails
    launcher = WarmForkRunLauncher(preload_modules=["pipelines.no_such_module"])
    with pytest.raises(PreloadFailed, match=r"pipelines\.no_such_module.*No module named"):
        launcher.launch_run(LaunchRunContext(dagster_run=_run({}), workspace=None))
    assert launcher._workers == {}  # nothing was forked
