"""`si webhooks`: the provider webhook inbox (docs/webhooks.md).

`list` shows counts by provider and status, the oldest unapplied event's age, the last error, rejected calls and
the newest events (never a payload); `replay` puts events back in the queue (by id, or all `unmatched` /
`error` ones) and can apply them at once; `configure` sets a connection's webhook settings and secret (write-only:
typed at a prompt, read from stdin, or generated and shown once).
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from integration_core.cli.common import ExitCode, console, core_errors, fail
from integration_core.settings import get_settings

webhooks_app = typer.Typer(help="Provider webhooks: the inbox, replay, per-connection settings.", no_args_is_help=True)

STATUSES = ("received", "applied", "unmatched", "error")


def _engine() -> Any:
    from integration_core.db.engine import get_engine

    return get_engine()


@webhooks_app.command("list")
def list_cmd(
    provider: Annotated[str | None, typer.Option(help="servicetitan, housecallpro or generic")] = None,
    status: Annotated[str | None, typer.Option(help="received, applied, unmatched or error")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="newest events shown")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The inbox: counts by provider and status, rejected calls, the newest events."""
    from integration_core.webhooks import inbox

    if status is not None and status not in STATUSES:
        raise fail(f"--status must be one of {', '.join(STATUSES)}", ExitCode.usage)
    with core_errors(), _engine().connect() as conn:
        summary = inbox.summary(conn)
        events = inbox.list_events(conn, provider=provider, status=status, limit=limit)
    if as_json:
        console.print_json(json.dumps({**summary, "latest": events}, default=str))
        return
    counts = Table("provider", *STATUSES, title="webhook events")
    for name, by_status in sorted(summary["events"].items()):
        counts.add_row(name, *(str(by_status.get(s, 0)) for s in STATUSES))
    console.print(counts)
    age = summary["oldest_unapplied_age_s"]
    console.print(f"unapplied: {summary['unapplied']}" + (f" (oldest {age:.0f} s)" if age is not None else ""))
    if summary["last_error"]:
        e = summary["last_error"]
        console.print(
            f"last error: event {e['id']} ({e['provider']} {e['event_type']}, {e['status']}): {e['last_error']}"
        )
    if summary["rejected"]:
        rejected = Table("provider", "connection", "reason", "count", "last", title="rejected calls (no body kept)")
        for r in summary["rejected"]:
            rejected.add_row(r["provider"], r["connection_id"] or "-", r["reason"], str(r["count"]), r["last_at"])
        console.print(rejected)
    latest = Table(
        "id", "provider", "type", "record", "occurred", "received", "status", "tries", "error", title="latest"
    )
    for e in events:
        latest.add_row(
            str(e["id"]),
            e["provider"],
            e["event_type"],
            e["external_id"] or "-",
            e["occurred_at"] or "-",
            e["received_at"],
            e["status"],
            str(e["attempts"]),
            (e["last_error"] or "")[:60],
        )
    console.print(latest)


@webhooks_app.command("replay")
def replay_cmd(
    ids: Annotated[list[int] | None, typer.Argument(help="event ids (see `si webhooks list`)")] = None,
    status: Annotated[str | None, typer.Option(help="every event in this status: unmatched, error or applied")] = None,
    provider: Annotated[str | None, typer.Option(help="only this provider's events")] = None,
    apply: Annotated[
        bool, typer.Option("--apply/--no-apply", help="apply now instead of leaving it to the sensor")
    ] = True,
) -> None:
    """Queue events again (status `received`, attempts reset); applying is idempotent, so replaying an applied
    event changes nothing that is already so."""
    from integration_core.webhooks import inbox

    if not ids and status is None:
        raise fail("name event ids or --status", ExitCode.usage)
    if status is not None and status not in ("unmatched", "error", "applied"):
        raise fail("--status must be unmatched, error or applied", ExitCode.usage)
    with core_errors(), _engine().begin() as conn:
        n = inbox.replay(conn, ids=list(ids or []) or None, status=status, provider=provider)
    console.print(f"{n} event(s) queued again")
    if apply and n:
        summary = _apply_now()
        console.print(
            f"applied {summary.applied} ({summary.changed} changed a routing), {summary.unmatched} unmatched, "
            f"{summary.errors} failed"
        )


def _apply_now() -> Any:
    from integration_core.delivery.runs import run_async
    from integration_core.webhooks.apply import apply_inbox

    with core_errors():
        return run_async(get_settings(), lambda engine, settings: apply_inbox(engine, settings))


@webhooks_app.command("configure")
def configure_cmd(
    connection_id: Annotated[str, typer.Argument(help="the provider connection's id")],
    generate_secret: Annotated[bool, typer.Option(help="generate a secret and print it once")] = False,
    secret_stdin: Annotated[bool, typer.Option(help="read the secret from stdin")] = False,
    header: Annotated[str | None, typer.Option(help="signature header (default: the provider's)")] = None,
    encoding: Annotated[str | None, typer.Option(help="hex or base64 (default: the provider's)")] = None,
    timestamp_header: Annotated[str | None, typer.Option(help="signed timestamp header ('' for none)")] = None,
    tolerance: Annotated[int | None, typer.Option(min=1, help="timestamp tolerance in seconds")] = None,
    disable: Annotated[
        bool, typer.Option(help="refuse this connection's webhooks (401) until configured again")
    ] = False,
) -> None:
    """Set a connection's webhook settings and signing secret. The secret is stored encrypted and never shown
    again; register `/webhooks/<provider>?connection=<id>` with the provider."""
    from integration_core.db.engine import session_scope
    from integration_core.webhooks import endpoints

    try:
        cid = uuid.UUID(connection_id)
    except ValueError:
        raise fail("connection_id must be a UUID", ExitCode.usage) from None
    if generate_secret:
        secret = endpoints.generate_secret()
    elif secret_stdin:
        secret = sys.stdin.readline().strip()
    else:
        secret = typer.prompt("webhook signing secret", hide_input=True)
    settings = get_settings()
    with core_errors(), session_scope(_engine()) as session:
        row = endpoints.configure(
            session,
            cid,
            secret=secret,
            secret_key=settings.secret_key.get_secret_value(),
            signature_header=header,
            signature_encoding=encoding,
            timestamp_header=timestamp_header,
            timestamp_tolerance_seconds=tolerance,
            enabled=not disable,
            actor="cli",
        )
        shown = endpoints.describe(row)
    console.print_json(json.dumps(shown))
    console.print(f"register: POST /webhooks/{shown['provider']}?connection={cid}")
    if generate_secret:
        console.print(f"secret (shown once): {secret}")
