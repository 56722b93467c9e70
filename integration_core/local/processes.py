"""Is a process (or a process group) still there? Shared by the stack supervisor and the run launcher."""

import os
from collections.abc import Callable


def _signal_zero(send: Callable[[int, int], None], target: int) -> bool:
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def pid_alive(pid: int) -> bool:
    return _signal_zero(os.kill, pid)


def group_alive(pgid: int) -> bool:
    return _signal_zero(os.killpg, pgid)
