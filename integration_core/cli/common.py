"""What every `si` command shares: the exit codes, the consoles, `fail` and the mapping of core errors to exit codes.

Exit codes (docs/troubleshooting.md, README): 0 ok · 1 the operation failed · 2 usage error · 3 a dependency
(database, Dagster, provider) is unavailable · 4 not found.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from integration_core.errors import InvalidInput, NotFound
from integration_core.operations.dagster_client import DagsterUnavailable


class ExitCode(enum.IntEnum):
    """`si`'s exit codes, the same for every command."""

    ok = 0
    failed = 1  # the operation failed
    usage = 2  # usage error: a bad option or argument, an invalid setting (typer uses 2 as well)
    unavailable = 3  # a dependency (database, Dagster, provider) is unavailable
    not_found = 4  # the named entity does not exist


console = Console()
err = Console(stderr=True)


def fail(message: str, code: ExitCode = ExitCode.failed) -> typer.Exit:
    """Print `error: message` on stderr and return the `typer.Exit` to raise (`raise fail(...)`)."""
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(int(code))


@contextmanager
def core_errors() -> Iterator[None]:
    """Map core errors to exit codes; never print a traceback for something an operator can act on."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    try:
        yield
    except NotFound as exc:
        raise fail(str(exc), ExitCode.not_found) from None
    except InvalidInput as exc:
        raise fail(str(exc), ExitCode.usage) from None
    except DagsterUnavailable as exc:
        raise fail(f"{exc} (is the Dagster webserver up? DAGSTER_WEBSERVER_URL)", ExitCode.unavailable) from None
    except OperationalError as exc:
        raise fail(f"database unavailable ({type(exc.orig).__name__})", ExitCode.unavailable) from None
    except DBAPIError as exc:
        raise fail(f"the database refused the request ({type(exc.orig).__name__})", ExitCode.failed) from None
