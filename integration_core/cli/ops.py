"""`si` operator commands: health, status, routings, connections, companies, dry runs, the run queue.

Registered on the `si` app by `integration_core/cli/main.py`. They read and write the database directly (like the
API, through the same core functions: `integration_core/operations/`, `integration_core/delivery/retry.py`), and
reach Dagster through its webserver's GraphQL API. Exit codes: `integration_core/cli/common.py` (`ExitCode`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table

from integration_core.cli.common import ExitCode, console, core_errors, err, fail
from integration_core.domain import RoutingStatus
from integration_core.errors import NotFound
from integration_core.settings import get_settings

if TYPE_CHECKING:  # the database layer is imported when a command runs: `si --help` starts fast
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

ACTOR = "cli"

routings_app = typer.Typer(help="Routings: list, show, retry failed ones.", no_args_is_help=True)
connections_app = typer.Typer(help="Provider connections: add, test, enable, disable.", no_args_is_help=True)
companies_app = typer.Typer(help="Companies.", no_args_is_help=True)
queue_app = typer.Typer(help="Dagster's run queue.", no_args_is_help=True)


def _engine() -> Engine:
    from integration_core.db.engine import get_engine

    return get_engine()


@contextmanager
def _session() -> Iterator[Session]:
    from integration_core.db.engine import session_scope

    with core_errors(), session_scope(_engine()) as session:
        yield session


def _parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise fail(f"{what} {value!r} is not a UUID", ExitCode.usage) from None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


_STATUS_STYLE = {"up": "green", "degraded": "yellow", "down": "red", "disabled": "dim"}


# --------------------------------------------------------------------------------------------------------------
# health / status
# --------------------------------------------------------------------------------------------------------------


def health_cmd(
    component: Annotated[
        str | None, typer.Argument(help="one of db, providers, dagster, sandbox (default: all)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the same JSON as GET /api/admin/health")] = False,
) -> None:
    """Check the database, the provider connections, Dagster and the sandbox (the checks of GET /api/health);
    exit 3 when a required component (HEALTH_REQUIRED_COMPONENTS) is down, or the one component asked for."""
    from integration_core.operations import health
    from integration_core.settings import HEALTH_COMPONENTS

    settings = get_settings()
    if component is not None and component not in HEALTH_COMPONENTS:
        raise fail(f"unknown component {component!r}; choose from {', '.join(HEALTH_COMPONENTS)}", ExitCode.usage)
    engine = _engine()
    if component is None:
        report = health.check_all(engine, settings)
    else:
        report = health.HealthReport.of({component: health.check_component(component, engine, settings)})
    if as_json:
        _print_json(report.model_dump(mode="json", exclude_none=True))
    else:
        table = Table("component", "status", "required", "detail", title=f"health: {report.status}")
        for c in report.components.values():
            style = _STATUS_STYLE.get(c.status, "")
            table.add_row(c.name, f"[{style}]{c.status}[/{style}]", "yes" if c.required else "no", _detail(c))
        console.print(table)
    down = report.required_down if component is None else [c.name for c in report.components.values() if not c.ok]
    if down:
        raise typer.Exit(int(ExitCode.unavailable))


def _detail(c: Any) -> str:
    d = c.detail
    if "error" in d:
        return str(d["error"])
    if c.name == "db":
        return f"SELECT 1 in {d.get('latency_ms')} ms"
    if c.name == "providers":
        lines = [f"{d.get('healthy', 0)}/{d.get('enabled_connections', 0)} enabled connection(s) healthy"]
        for conn in d.get("connections", []):
            extra = f": {conn['error']}" if conn.get("error") and conn.get("health") != "healthy" else ""
            cached = " (cached)" if conn.get("cached") else ""
            account = f"{conn.get('provider', '')} {conn.get('account_id', '')}".strip()
            lines.append(f"  {account} ({conn['delivery_mode']}): {conn['health']}{cached}{extra}")
        return "\n".join(lines)
    if c.name == "dagster":
        q = d.get("run_queue", {})
        daemons = ", ".join(f"{x['daemon']}={'ok' if x['healthy'] else 'NO'}" for x in d.get("daemons", []))
        return f"{d.get('webserver')}: runs queued {q.get('queued')}, in progress {q.get('in_progress')}\n{daemons}"
    if c.name == "sandbox":
        return str(d.get("message") or f"{d.get('url')} ({d.get('tenants')} tenants)")
    return json.dumps(d, default=str)


def status_cmd(
    company: Annotated[str | None, typer.Option("--company", help="only this receiving company (id)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the same JSON as GET /api/admin/queue-stats")] = False,
) -> None:
    """Routings by status per receiving company, the oldest pending routing, and Dagster's run queue."""
    from integration_core.operations import admin

    company_id = _parse_uuid(company, "company") if company else None
    with _session() as session:
        stats = admin.queue_stats(session, get_settings(), company_id=company_id)
    if as_json:
        _print_json(stats.model_dump(mode="json"))
        return
    statuses = [s.value for s in RoutingStatus]
    table = Table("company", *statuses, "oldest pending", title="routings by status")
    for c in stats.companies:
        table.add_row(
            c.company_name, *(str(c.by_status.get(s, 0)) for s in statuses), _age(c.oldest_pending_age_seconds)
        )
    table.add_row(
        "[bold]total[/bold]",
        *(f"[bold]{stats.by_status.get(s, 0)}[/bold]" for s in statuses),
        _age(stats.oldest_pending_age_seconds),
    )
    console.print(table)
    db = stats.database_connections
    if db is not None:
        console.print(
            f"PostgreSQL connections: {db.current} open of max_connections = {db.max_connections} "
            f"(the service may open up to {db.configured_max})"
        )
        if db.warning:
            console.print(f"[yellow]warning: {db.warning}[/yellow]")
    if stats.dagster is not None:
        console.print(f"Dagster runs: {stats.dagster.queued} queued, {stats.dagster.in_progress} in progress")
    else:
        console.print(f"[yellow]Dagster runs: unknown — {stats.dagster_unavailable_reason}[/yellow]")


def rate_limits_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print the same JSON as GET /api/admin/rate-limits")] = False,
) -> None:
    """Per tenant: rate, tokens available now, Retry-After backoff, 429s in the last hour."""
    from integration_core.operations import admin

    with _session() as session:
        limits = admin.rate_limits(session, get_settings())
    if as_json:
        _print_json([x.model_dump(mode="json") for x in limits])
        return
    table = Table("provider", "account", "companies", "rate/s", "current/s", "tokens", "backoff left", "429s 1h")
    for x in limits:
        table.add_row(
            x.provider,
            x.account_id,
            ", ".join(x.companies),
            f"{x.rate:g}",
            f"{x.current_rate:g}",
            f"{x.tokens_available:g}/{x.burst}",
            f"{x.backoff_seconds_left:g}s" if x.backoff_seconds_left else "-",
            str(x.rate_limited_last_hour),
        )
    console.print(table)


# --------------------------------------------------------------------------------------------------------------
# routings
# --------------------------------------------------------------------------------------------------------------


@routings_app.command("list")
def routings_list(
    status: Annotated[RoutingStatus | None, typer.Option("--status", help="only this status")] = None,
    company: Annotated[str | None, typer.Option("--company", help="receiving company id")] = None,
    error_code: Annotated[str | None, typer.Option("--error-code", help="only this last error code")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="at most this many rows")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Routings, newest first (`--status failed` is the dead-letter view)."""
    from integration_core.operations.routings import list_routings

    company_id = _parse_uuid(company, "company") if company else None
    with _session() as session:
        rows = list_routings(session, status=status, company_id=company_id, error_code=error_code, limit=limit)
    if as_json:
        _print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table("routing id", "company", "status", "attempts", "external id", "error", "updated")
    for r in rows:
        error = f"{r.last_error_code}: {r.last_error_message or ''}"[:80] if r.last_error_code else "-"
        table.add_row(
            str(r.id),
            r.receiving_company_name or str(r.receiving_company_id),
            r.status,
            str(r.attempts),
            r.external_id or "-",
            error,
            _when(r.updated_at),
        )
    console.print(table)
    console.print(f"{len(rows)} routing(s)")


@routings_app.command("show")
def routings_show(
    routing_id: Annotated[str, typer.Argument(help="routing id")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One routing and every delivery attempt (lookups included)."""
    from integration_core.operations.routings import get_routing

    rid = _parse_uuid(routing_id, "routing")
    with _session() as session:
        detail = get_routing(session, rid)
    if as_json:
        _print_json(detail.model_dump(mode="json"))
        return
    info = Table.grid(padding=(0, 2))
    for name, value in (
        ("routing", detail.id),
        ("job", detail.job_id),
        ("company", f"{detail.receiving_company_name} ({detail.receiving_company_id})"),
        ("status", detail.status),
        ("attempts", detail.attempts),
        ("next attempt", _when(detail.next_attempt_at)),
        ("mode", detail.delivery_mode or "-"),
        ("external id", detail.external_id or "-"),
        ("external status", detail.external_status or "-"),
        ("last error", f"{detail.last_error_code}: {detail.last_error_message}" if detail.last_error_code else "-"),
        ("lease", f"{detail.lease_owner} until {_when(detail.lease_expires_at)}" if detail.lease_owner else "-"),
        ("created", _when(detail.created_at)),
    ):
        info.add_row(f"[bold]{name}[/bold]", str(value))
    console.print(info)
    table = Table("#", "operation", "run", "started", "outcome", "http", "ms", "error", title="attempts")
    for a in detail.attempts_log:
        table.add_row(
            str(a.attempt_no),
            a.operation,
            a.run_id or "-",
            _when(a.started_at),
            a.outcome,
            str(a.http_status or "-"),
            str(a.duration_ms if a.duration_ms is not None else "-"),
            f"{a.error_code}: {a.error_message or ''}"[:80] if a.error_code else "-",
        )
    console.print(table if detail.attempts_log else "no attempts yet")


RETRY_CHUNK = 500


@routings_app.command("retry")
def routings_retry(
    routing_ids: Annotated[list[str] | None, typer.Argument(help="routing ids (failed ones are retried)")] = None,
    company: Annotated[str | None, typer.Option("--company", help="every failed routing of this company")] = None,
    error_code: Annotated[str | None, typer.Option("--error-code", help="every failed routing with this code")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="recorded in the audit log")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Return failed routings to pending (due now, attempts reset). Filters combine; at least one is needed."""
    from rich.progress import Progress

    from integration_core.delivery.retry import failed_matching, retry_failed
    from integration_core.operations.routings import routing_statuses

    ids = [_parse_uuid(i, "routing") for i in routing_ids or []]
    company_id = _parse_uuid(company, "company") if company else None
    if not (ids or company_id or error_code):
        raise fail("name routing ids, --company or --error-code", ExitCode.usage)
    with _session() as session:
        if ids:
            known = routing_statuses(session, ids)
            missing = [str(i) for i in ids if i not in known]
            if missing:
                raise NotFound("routing", ", ".join(missing))
            skipped = {str(i): known[i] for i in ids if known[i] != RoutingStatus.failed}
            for rid, st in skipped.items():
                err.print(f"[yellow]skipped[/yellow] {rid}: {st}, only failed routings can be retried")
        targets = failed_matching(session, routing_ids=ids, company_id=company_id, error_code=error_code)
    if not targets:
        if ids:
            raise fail("none of the given routings is failed; nothing retried", ExitCode.failed)
        console.print("no failed routings match; nothing to retry")
        return
    if not yes:
        typer.confirm(f"Retry {len(targets)} failed routing(s)?", abort=True)
    retried = 0
    with Progress(console=console, transient=len(targets) <= RETRY_CHUNK) as progress:
        task = progress.add_task("retrying", total=len(targets))
        for start in range(0, len(targets), RETRY_CHUNK):
            chunk = targets[start : start + RETRY_CHUNK]
            with _session() as session:  # one short transaction per chunk
                retried += len(retry_failed(session, routing_ids=chunk, actor=ACTOR, reason=reason))
            progress.update(task, advance=len(chunk))
    console.print(f"retried {retried} routing(s): pending again, due now")


def dry_run_cmd(
    routing_id: Annotated[str, typer.Argument(help="routing id")],
    as_json: Annotated[bool, typer.Option("--json", help="the same JSON as POST /api/routings/{id}/dry-run")] = False,
) -> None:
    """What the next delivery run would do with a routing, and the exact bodies it would send. Sends nothing."""
    from integration_core.delivery.dryrun import dry_run

    rid = _parse_uuid(routing_id, "routing")
    with _session() as session:
        result = dry_run(session, rid, get_settings())
    data = result.model_dump(mode="json")
    if as_json:
        _print_json(data)
        return
    console.print(f"[bold]routing[/bold] {result.routing_id}  status {result.status}  attempts {result.attempts}")
    console.print(f"[bold]would send[/bold] {'yes' if result.would_send else 'no'} — {result.decision}")
    for req in result.requests:
        console.print(f"\n[bold]{req.operation}[/bold]  {req.method} {req.url}  [dim]({req.when})[/dim]")
        if req.params:
            console.print(f"  params {json.dumps(req.params)}")
        if req.body is not None:
            console.print_json(json.dumps(req.body))
    for name, meaning in result.placeholders.items():
        console.print(f"[dim]{name}: {meaning}[/dim]")
    console.print("\n[dim]dry run: nothing was sent, nothing was changed[/dim]")


# --------------------------------------------------------------------------------------------------------------
# connections
# --------------------------------------------------------------------------------------------------------------


@connections_app.command("list")
def connections_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every provider connection: health, mode, last success / failure (the same as GET /api/admin/providers)."""
    from integration_core.operations import admin

    with _session() as session:
        rows = admin.list_providers(session, get_settings())
    if as_json:
        _print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table(
        "company", "provider", "account", "env", "mode", "enabled", "health", "last success", "last failure", "error"
    )
    for r in rows:
        table.add_row(
            r.company_name,
            r.provider,
            r.account_id,
            r.environment,
            r.delivery_mode,
            "yes" if r.enabled else "no",
            r.health,
            _when(r.last_success_at),
            _when(r.last_failure_at),
            (r.last_error or "-")[:60],
        )
    console.print(table)


def _secret(value: str | None, fallback: str | None, prompt: str) -> str:
    if value:
        return value
    if fallback:
        return fallback
    return str(typer.prompt(prompt, hide_input=True))


@connections_app.command("add")
def connections_add(
    company_id: Annotated[str, typer.Argument(help="company id")],
    provider: Annotated[str, typer.Option(help="servicetitan | housecallpro")] = "servicetitan",
    tenant_id: Annotated[
        str | None, typer.Option(help="ServiceTitan: tenant id (default SERVICETITAN_TENANT_ID)")
    ] = None,
    account_id: Annotated[str | None, typer.Option(help="Housecall Pro: the company id the API key belongs to")] = None,
    environment: Annotated[
        str | None,
        typer.Option(help="production | integration (ServiceTitan) | sandbox (default SERVICETITAN_ENV / sandbox)"),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="sandbox on loopback (default SERVICETITAN_SANDBOX_URL / HOUSECALLPRO_SANDBOX_URL)"),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="delivery mode: booking | job (ServiceTitan), lead | job (Housecall Pro)")
    ] = None,
    booking_provider_id: Annotated[int | None, typer.Option(help="booking mode: the booking provider id")] = None,
    business_unit_id: Annotated[int | None, typer.Option(help="ServiceTitan job mode: business unit id")] = None,
    job_type_id: Annotated[int | None, typer.Option(help="ServiceTitan job mode: job type id")] = None,
    campaign_id: Annotated[int | None, typer.Option(help="ServiceTitan job mode: campaign id")] = None,
    external_data_guid: Annotated[str | None, typer.Option(help="job mode: the app's externalData GUID")] = None,
    priority: Annotated[str, typer.Option(help="ServiceTitan: Low | Normal | High | Urgent")] = "Normal",
    lead_source: Annotated[str | None, typer.Option(help="Housecall Pro: the lead source our records carry")] = None,
    rate: Annotated[
        float | None, typer.Option(help="requests per second the provider allows this account (0.1..100)")
    ] = None,
    burst: Annotated[int | None, typer.Option(help="requests at once within that budget (1..100)")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="store it disabled")] = False,
    client_id: Annotated[
        str | None, typer.Option(help="default SERVICETITAN_CLIENT_ID, else asked (hidden)", show_default=False)
    ] = None,
) -> None:
    """Create or replace a company's connection to ServiceTitan (`--provider servicetitan`, the default) or
    Housecall Pro (`--provider housecallpro`). Secrets are read from the environment or .env
    (SERVICETITAN_CLIENT_SECRET / SERVICETITAN_APP_KEY; HOUSECALLPRO_API_KEY) or asked with hidden input; they
    are stored encrypted and never printed."""
    from pydantic import ValidationError

    from integration_core.errors import InvalidInput
    from integration_core.providers import registry
    from integration_core.referrals import directory
    from integration_core.schemas import ConnectionCreate

    settings = get_settings()
    cid = _parse_uuid(company_id, "company")
    if provider not in registry.names():
        raise fail(f"--provider: one of {', '.join(registry.names())}", ExitCode.usage)
    body: dict[str, Any] = {"provider": provider, "enabled": not disabled}
    if rate is not None:
        body["rate_limit_per_second"] = rate
    if burst is not None:
        body["rate_limit_burst"] = burst
    if provider == "housecallpro":
        env = environment or "sandbox"
        body |= {
            "environment": env,
            "base_url": base_url or (settings.housecallpro_sandbox_url if env == "sandbox" else None),
            "company_id": account_id,
            "delivery_mode": mode or "lead",
        }
        if lead_source:
            body["lead_source"] = lead_source
        if not account_id:
            raise fail("--account-id is required (the Housecall Pro company id)", ExitCode.usage)
        hcp_key = settings.housecallpro_api_key
        body["api_key"] = _secret(None, hcp_key.get_secret_value() if hcp_key else None, "API key")
    else:
        env = environment or settings.servicetitan_env
        body |= {
            "environment": env,
            "base_url": base_url or (settings.servicetitan_sandbox_url if env == "sandbox" else None),
            "tenant_id": tenant_id or settings.servicetitan_tenant_id,
            "delivery_mode": mode or "booking",
            "booking_provider_id": booking_provider_id,
            "business_unit_id": business_unit_id,
            "job_type_id": job_type_id,
            "campaign_id": campaign_id,
            "external_data_guid": external_data_guid,
            "priority": priority,
        }
        if not body["tenant_id"]:
            raise fail("--tenant-id is required (or set SERVICETITAN_TENANT_ID)", ExitCode.usage)
        secret_default = settings.servicetitan_client_secret
        app_key_default = settings.servicetitan_app_key
        body["client_id"] = _secret(client_id, settings.servicetitan_client_id, "client id")
        body["client_secret"] = _secret(
            None, secret_default.get_secret_value() if secret_default else None, "client secret"
        )
        body["app_key"] = _secret(None, app_key_default.get_secret_value() if app_key_default else None, "app key")
    try:
        data = ConnectionCreate.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'connection'}: {e['msg']}" for e in exc.errors()
        )
        raise fail(problems, ExitCode.usage) from None
    with _session() as session:
        try:
            conn = directory.upsert_connection(
                session, cid, data, secret_key=settings.secret_key.get_secret_value(), actor=ACTOR
            )
        except InvalidInput as exc:
            raise fail("; ".join(f"{loc[-1]}: {msg}" for loc, msg in exc.errors), ExitCode.usage) from None
        out = directory.connection_out(conn)
    console.print(
        f"connection {out.id} saved for company {cid}: {out.provider} {out.account_id}, {out.environment}, "
        f"{out.delivery_mode} mode, {'enabled' if out.enabled else 'disabled'}"
    )
    console.print("check it with: si connections test " + str(cid))


@connections_app.command("test")
def connections_test(company_id: Annotated[str, typer.Argument(help="company id")]) -> None:
    """Check the company's connection now: token, a cheap read, the configured ids (exit 1 if it fails, 3 if
    the provider cannot be reached)."""
    from integration_core.operations import health
    from integration_core.referrals import directory

    cid = _parse_uuid(company_id, "company")
    with _session() as session:
        conn_id = directory.company_connection(session, cid).id
    with core_errors():
        [result] = health.check_connections(_engine(), get_settings(), connection_ids=[conn_id], force=True)
    if result.ok:
        console.print(f"[green]healthy[/green]: {result.provider} {result.account_id} ({result.delivery_mode} mode)")
        return
    console.print(
        f"[red]{result.health}[/red]: {result.provider} {result.account_id}: {result.error_code}: {result.error}"
    )
    raise typer.Exit(int(ExitCode.unavailable if result.unavailable else ExitCode.failed))


def _toggle(company_id: str, enabled: bool) -> None:
    from integration_core.referrals import directory

    cid = _parse_uuid(company_id, "company")
    with _session() as session:
        conn = directory.company_connection(session, cid)
        moved = directory.set_connection_enabled(session, conn, enabled, actor=ACTOR)
    word = "enabled" if enabled else "disabled"
    where = "no_integration → pending" if enabled else "pending → no_integration"
    console.print(f"connection {word}; {moved} routing(s) moved {where}")


@connections_app.command("enable")
def connections_enable(company_id: Annotated[str, typer.Argument(help="company id")]) -> None:
    """Enable the company's connection: its no_integration routings become pending (due now)."""
    _toggle(company_id, True)


@connections_app.command("disable")
def connections_disable(company_id: Annotated[str, typer.Argument(help="company id")]) -> None:
    """Disable the company's connection: its pending routings wait in no_integration (nothing is lost)."""
    _toggle(company_id, False)


# --------------------------------------------------------------------------------------------------------------
# companies
# --------------------------------------------------------------------------------------------------------------


@companies_app.command("list")
def companies_list(
    active: Annotated[
        Literal["all", "active", "disabled"] | None, typer.Option(help="which companies (default all)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the same JSON as GET /api/admin/companies")] = False,
) -> None:
    """Companies with their skills, service area and provider connection."""
    from integration_core.operations import admin

    flag = {"active": True, "disabled": False}.get(active or "all")
    with _session() as session:
        items, total = admin.list_companies(session, active=flag, limit=10_000)
    if as_json:
        _print_json([c.model_dump(mode="json") for c in items])
        return
    table = Table("company", "id", "active", "skills", "zip codes", "technicians", "provider")
    for c in items:
        skills = ", ".join(f"{s.skill} ({s.level}{', primary' if s.primary else ''})" for s in c.skills)
        zips = " ".join(c.service_zip_codes[:6]) + (
            f" +{len(c.service_zip_codes) - 6}" if len(c.service_zip_codes) > 6 else ""
        )
        p = c.provider
        state = "enabled" if p.enabled else "DISABLED"
        provider = f"{p.provider} {p.account_id} ({p.delivery_mode}, {state}, {p.health})" if p.configured else "none"
        table.add_row(
            c.name, str(c.id), "yes" if c.active else "no", skills or "-", zips or "-", str(c.technicians), provider
        )
    console.print(table)
    console.print(f"{total} company(ies)")


@companies_app.command("show")
def companies_show(company_id: Annotated[str, typer.Argument(help="company id")]) -> None:
    """One company as JSON (skills, technicians, provider summary)."""
    from integration_core.operations import admin

    cid = _parse_uuid(company_id, "company")
    with _session() as session:
        company = admin.get_company(session, cid)
    _print_json(company.model_dump(mode="json"))


# --------------------------------------------------------------------------------------------------------------
# Dagster run queue
# --------------------------------------------------------------------------------------------------------------


@queue_app.command("list")
def queue_list() -> None:
    """Queued Dagster runs (one per receiving company at most is launched at a time)."""
    from integration_core.operations.dagster_client import DagsterClient

    with core_errors():
        runs = DagsterClient.from_settings(get_settings()).queued_runs()
    table = Table("run id", "job", "partition (company)", "tenant", "queued at")
    for r in runs:
        table.add_row(r.run_id, r.job_name, r.partition or "-", r.tags.get("tenant", "-"), _when(r.created_at))
    console.print(table)
    console.print(f"{len(runs)} queued run(s)")


@queue_app.command("clear")
def queue_clear(yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False) -> None:
    """Cancel every queued Dagster run (POST /api/admin/clear-queues). Routings are untouched: pending work
    stays pending and the sensor requests fresh runs."""
    from integration_core.operations import admin

    if not yes:
        typer.confirm("Cancel every queued Dagster run?", abort=True)
    with _session() as session:
        result = admin.clear_queues(session, get_settings(), actor=ACTOR)
    for run in result.cancelled:
        console.print(f"cancelled {run.run_id} ({run.job_name}, partition {run.partition or '-'})")
    for run_id, why in result.failed.items():
        err.print(f"[yellow]not cancelled[/yellow] {run_id}: {why}")
    console.print(result.message)
    if result.failed:
        raise typer.Exit(int(ExitCode.failed))


def register(app: typer.Typer) -> None:
    """Attach the operator commands to the `si` app."""
    app.command("health")(health_cmd)
    app.command("status")(status_cmd)
    app.command("dry-run")(dry_run_cmd)
    app.command("rate-limits")(rate_limits_cmd)
    app.add_typer(routings_app, name="routings")
    app.add_typer(connections_app, name="connections")
    app.add_typer(companies_app, name="companies")
    app.add_typer(queue_app, name="queue")
