"""The `si` command line: one Typer app (main), the operator commands (ops), shared exit codes and output."""

from .main import app

__all__ = ["app"]
