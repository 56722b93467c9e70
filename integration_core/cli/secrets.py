"""`si secrets`: stored secrets and the encryption keys (docs/security.md, "Rotating the secret key").

Rotation: put the new key first in `SECRET_KEYS` (`SECRET_KEYS=new,old`; everything still decrypts), restart the
services, run `si secrets rotate` (re-encrypts every stored secret of `crypto.ENCRYPTED_COLUMNS` with the new key;
safe to run again), then drop the old key (`SECRET_KEYS=new`, or `SECRET_KEY=new`) and restart.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from integration_core.cli.common import ExitCode, console, core_errors, fail
from integration_core.settings import get_settings

secrets_app = typer.Typer(help="Stored secrets: key rotation.", no_args_is_help=True)


@secrets_app.command("rotate")
def rotate(
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="rows per transaction")] = 500,
) -> None:
    """Re-encrypt every stored secret with the first key of SECRET_KEYS; report counts per column. Idempotent:
    values already under the first key are left alone. Exit 1 if a value no configured key decrypts."""
    from integration_core import crypto
    from integration_core.db.engine import get_engine

    settings = get_settings()
    with core_errors():
        counts = crypto.rotate_all(get_engine(), settings.secret_key.get_secret_value(), batch_size=batch_size)
    table = Table("table", "column", "rows", "values", "rotated", "already current", "failed", title="secrets rotate")
    for c in counts:
        table.add_row(c.table, c.column, str(c.rows), str(c.values), str(c.rotated), str(c.current), str(c.failed))
    console.print(table)
    rotated = sum(c.rotated for c in counts)
    failed = [(c, key) for c in counts for key in c.failed_keys]
    console.print(f"{rotated} value(s) re-encrypted with the first key")
    if failed:
        for c, key in failed[:20]:
            console.print(f"  cannot decrypt {c.table}.{c.column} of row {key}")
        raise fail(
            f"{len(failed)} value(s) no configured key decrypts: add the key they were written with to SECRET_KEYS, "
            "or re-enter those credentials",
            ExitCode.failed,
        )
