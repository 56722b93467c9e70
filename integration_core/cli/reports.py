"""`si report`: the daily report tables (docs/reports.md).

    si report deliveries --from 2026-06-01 --to 2026-06-07 [--csv FILE] [--json] [--limit N]
    si report outcomes   --from 2026-06-01 --to 2026-06-07 [--csv FILE]
    si report backfill   --from 2026-06-01 --to 2026-06-30 [--report deliveries|outcomes|both]

`deliveries` / `outcomes` read what the daily assets (or `backfill`) wrote; `--csv` exports every row of the range
(a progress bar while it pages through). `backfill` computes days directly, without Dagster (the same code as the
assets; materialization metadata and SLA checks only come from Dagster's own backfill, in the UI).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session

from integration_core.cli.common import ExitCode, console, core_errors, err, fail
from integration_core.settings import get_settings

report_app = typer.Typer(help="Daily reports: deliveries per company, referral outcomes (docs/reports.md).")

EXPORT_PAGE = 5000
MAX_DAYS = 3660

FromOpt = Annotated[str, typer.Option("--from", help="first reporting day, YYYY-MM-DD")]
ToOpt = Annotated[str, typer.Option("--to", help="last reporting day (included), YYYY-MM-DD")]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="write every row of the range to this CSV file")]
LimitOpt = Annotated[int, typer.Option(min=1, max=10_000, help="rows shown (without --csv)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output (without --csv)")]

DELIVERY_SHOWN = [
    ("day", "day"),
    ("company", "company_name"),
    ("key", "partition_key"),
    ("provider", "provider"),
    ("routed", "routed"),
    ("synced", "synced"),
    ("failed", "failed"),
    ("open", "still_open"),
    ("fail %", "failure_rate"),
    ("p50 s", "routed_to_synced_p50_s"),
    ("p95 s", "routed_to_synced_p95_s"),
    ("max s", "routed_to_synced_max_s"),
    ("att/deliv", "attempts_per_delivery"),
    ("429s", "rate_limited_429"),
    ("top errors", "top_error_codes"),
]
OUTCOME_SHOWN = [
    ("day", "day"),
    ("company", "company_name"),
    ("technician", "technician_name"),
    ("referred", "referred"),
    ("delivered", "delivered"),
    ("accepted", "accepted"),
    ("completed", "completed"),
    ("canceled", "canceled_dismissed"),
    ("revenue", "revenue"),
    ("conv %", "conversion_rate"),
    ("median days", "median_days_to_completion"),
]


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise fail(f"{option}: {value!r} is not a date (YYYY-MM-DD)", ExitCode.usage) from None


def _range(first: str, last: str) -> tuple[date, date]:
    a, b = _day(first, "--from"), _day(last, "--to")
    if b < a:
        raise fail(f"--to ({b}) is before --from ({a})", ExitCode.usage)
    if (b - a).days + 1 > MAX_DAYS:
        raise fail(f"at most {MAX_DAYS} days at a time", ExitCode.usage)
    return a, b


@contextmanager
def _session() -> Iterator[Session]:
    from integration_core.db.engine import get_engine, session_scope

    with core_errors(), session_scope(get_engine()) as session:
        yield session


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column in ("failure_rate", "conversion_rate"):
        return f"{float(value) * 100:.1f}"
    return str(value)


def _export(kind: str, first: date, last: date, path: Path) -> int:
    from integration_core.reports.store import read_report

    written = 0
    with _session() as session, path.open("w", newline="") as fh:
        rows, total = read_report(session, kind, first, last, offset=0, limit=EXPORT_PAGE)  # type: ignore[arg-type]
        writer: csv.DictWriter[str] | None = None
        with _progress() as progress:
            task = progress.add_task(f"exporting {kind} {first}..{last}", total=total)
            while rows:
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                    writer.writeheader()
                writer.writerows(rows)
                written += len(rows)
                progress.update(task, completed=written)
                if written >= total:
                    break
                rows, _ = read_report(session, kind, first, last, offset=written, limit=EXPORT_PAGE)  # type: ignore[arg-type]
    return written


def _show(kind: str, date_from: str, date_to: str, csv_path: Path | None, limit: int, as_json: bool) -> None:
    from integration_core.reports.store import read_report

    first, last = _range(date_from, date_to)
    if csv_path is not None:
        n = _export(kind, first, last, csv_path)
        console.print(f"{n} row(s) written to {csv_path}")
        return
    with _session() as session:
        rows, total = read_report(session, kind, first, last, offset=0, limit=limit)  # type: ignore[arg-type]
    if as_json:
        import json

        print(
            json.dumps(
                {"report": kind, "from": str(first), "to": str(last), "total": total, "rows": rows},
                indent=2,
                default=str,
            )
        )
        return
    shown = DELIVERY_SHOWN if kind == "deliveries" else OUTCOME_SHOWN
    table = Table(
        *(title for title, _ in shown), title=f"{kind} {first} .. {last} ({get_settings().reporting_timezone})"
    )
    for row in rows:
        table.add_row(*(_cell(row[c], c) for _, c in shown))
    console.print(table)
    more = f" (showing {len(rows)}; --limit or --csv for the rest)" if total > len(rows) else ""
    console.print(f"{total} row(s){more}")
    if total == 0:
        console.print(
            "nothing stored for this range: materialise the days in Dagster (Assets → delivery_report / "
            "referral_outcomes → Materialize / backfill) or run `si report backfill`"
        )


@report_app.command("deliveries")
def deliveries(
    date_from: FromOpt, date_to: ToOpt, csv_path: CsvOpt = None, limit: LimitOpt = 50, as_json: JsonOpt = False
) -> None:
    """Per day, receiving company and provider: routed, synced, failed, still open, latency, 429s, errors."""
    _show("deliveries", date_from, date_to, csv_path, limit, as_json)


@report_app.command("outcomes")
def outcomes(
    date_from: FromOpt, date_to: ToOpt, csv_path: CsvOpt = None, limit: LimitOpt = 50, as_json: JsonOpt = False
) -> None:
    """Per day, referring company and technician: the referral funnel, revenue, conversion."""
    _show("outcomes", date_from, date_to, csv_path, limit, as_json)


@report_app.command("backfill")
def backfill(
    date_from: FromOpt,
    date_to: ToOpt,
    report: Annotated[str, typer.Option(help="deliveries, outcomes or both")] = "both",
) -> None:
    """Compute (or recompute) every day of the range now, replacing its rows (no Dagster needed)."""
    from integration_core.reports.daily import write_delivery_report, write_referral_outcomes
    from integration_core.reports.days import days_between

    if report not in ("deliveries", "outcomes", "both"):
        raise fail("--report: deliveries, outcomes or both", ExitCode.usage)
    first, last = _range(date_from, date_to)
    tz = get_settings().reporting_timezone
    days = days_between(first, last)
    rows = 0
    with _progress() as progress:
        task = progress.add_task(f"computing {report} ({tz})", total=len(days))
        for day in days:
            with _session() as session:  # one transaction per day: a day is replaced whole or not at all
                if report in ("deliveries", "both"):
                    rows += write_delivery_report(session, day, tz).rows
                if report in ("outcomes", "both"):
                    rows += write_referral_outcomes(session, day, tz).rows
            progress.advance(task)
    console.print(f"{len(days)} day(s) computed ({first} .. {last}, {tz}); {rows} row(s) written")
