"""`python -m sandboxes.servicetitan`: serve the ServiceTitan sandbox (what `si sandbox serve` runs).

The sandbox is a test and development fake with an entry point of its own: the product package (`integration_core`)
never imports it; `si sandbox serve` and the local stack start this module as a process.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8100,
    host: Annotated[str, typer.Option(help="interface")] = "127.0.0.1",
    office: Annotated[bool, typer.Option(help="let the back office progress bookings and jobs")] = False,
    office_pace: Annotated[float, typer.Option(help="seconds between office steps")] = 5.0,
    seed: Annotated[int, typer.Option(help="seed of every random choice (faults, office)")] = 0,
    demo_tenants: Annotated[bool, typer.Option(help="seed the demo tenants")] = True,
    log_level: Annotated[
        str | None, typer.Option(help="uvicorn log level (default: LOG_LEVEL, else info)", show_default=False)
    ] = None,
) -> None:
    """Serve the ServiceTitan sandbox (the demo tenants are seeded). Control API: /_sandbox (docs/sandbox.md)."""
    from sandboxes.servicetitan import OfficeConfig, SandboxConfig
    from sandboxes.servicetitan import serve as run

    config = SandboxConfig(
        seed=seed,
        seed_demo_tenants=demo_tenants,
        office=OfficeConfig(enabled=office, pace_s=office_pace, seed=seed),
    )
    run(host=host, port=port, config=config, log_level=(log_level or os.environ.get("LOG_LEVEL") or "info").lower())


if __name__ == "__main__":
    app()
