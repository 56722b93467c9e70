"""Run an ASGI app under uvicorn in a background thread (tests, benchmarks, `make run` helpers)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _QuietServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the owning thread is not the main thread
        pass


@contextmanager
def serve_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    startup_timeout: float = 10.0,
    **config: Any,
) -> Iterator[str]:
    """Serve `app` on loopback until the block exits; yields the base URL (`http://host:port`)."""
    port = port or free_port(host)
    cfg = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", **config)
    server = _QuietServer(cfg)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"server on {host}:{port} failed to start")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"server on {host}:{port} did not start within {startup_timeout}s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
