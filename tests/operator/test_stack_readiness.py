"""The local stack reports itself up only once the daemon's run launcher is warm (integration_core/local/stack.py)."""

from pathlib import Path

from integration_core.local.stack import LAUNCHER_FAILED, LAUNCHER_READY, _launcher_warm


def test_the_launcher_is_warm_once_this_start_logged_it(tmp_path: Path) -> None:
    log = tmp_path / "dagster-daemon.log"
    log.write_text(f"{LAUNCHER_READY} (pipelines.worker_preload imported) in 3.1 s\nan earlier run's lines\n")
    offset = log.stat().st_size  # the daemon log is appended to across starts: only this start's lines count
    assert not _launcher_warm(log, offset)
    with log.open("a") as f:
        f.write("dagster.daemon - INFO - Instance is configured with the following daemons: [...]\n")
    assert not _launcher_warm(log, offset)
    with log.open("a") as f:
        f.write(f"{LAUNCHER_READY} (pipelines.worker_preload imported) in 6.8 s\n")
    assert _launcher_warm(log, offset)


def test_a_failed_warm_up_does_not_hold_the_start_back(tmp_path: Path) -> None:
    """Every launch then fails naming the import error (the daemon's log and each run say so): waiting would
    only hide it behind a start-up timeout."""
    log = tmp_path / "dagster-daemon.log"
    log.write_text(f"ERROR {LAUNCHER_FAILED} pipelines.worker_preload failed to import in the forkserver (...)\n")
    assert _launcher_warm(log, 0)
    assert not _launcher_warm(tmp_path / "missing.log", 0)
