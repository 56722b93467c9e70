"""Reading the report tables: `GET /api/reports/...` (token, paging, 422 on bad dates) and `si report`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from integration_core.cli import app
from integration_core.db.engine import session_scope
from integration_core.reports import write_delivery_report, write_referral_outcomes
from tests.support.reports import D1, D2, D3, TZ, D, ReportWorld, make_report_world


@pytest.fixture()
def stored(db: Engine) -> ReportWorld:
    world = make_report_world(db)
    with session_scope(db) as session:
        for day in (D, D1, D2, D3):
            write_delivery_report(session, day, TZ)
            write_referral_outcomes(session, day, TZ)
    return world


def test_api_pages_through_a_range(stored: ReportWorld, client: httpx.Client) -> None:
    first = client.get("/api/reports/deliveries", params={"from": str(D), "to": str(D3), "page_size": 3})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["report"], body["total"], body["pages"], body["page"]) == ("deliveries", 4, 2, 1)
    assert [(r["day"], r["company_name"]) for r in body["rows"]] == [
        (str(D), "Alpha Electric"),
        (str(D), "Beta Plumbing"),
        (str(D1), "Alpha Electric"),
    ]
    alpha = body["rows"][0]
    assert (alpha["routed"], alpha["routed_to_synced_p95_s"], alpha["top_error_codes"]) == (
        2,
        117.0,
        "rate_limited (2)",
    )
    second = client.get(
        "/api/reports/deliveries", params={"from": str(D), "to": str(D3), "page_size": 3, "page": 2}
    ).json()
    assert [(r["day"], r["company_name"], r["failure_rate"]) for r in second["rows"]] == [
        (str(D2), "Beta Plumbing", 1.0)
    ]

    outcomes = client.get("/api/reports/outcomes", params={"from": str(D), "to": str(D)}).json()
    assert [(r["technician_name"], r["referred"], r["revenue"]) for r in outcomes["rows"]] == [
        ("Tina", 2, "250.00"),
        ("Tom", 1, "0.00"),
    ]
    assert client.get("/api/reports/outcomes", params={"from": str(D3), "to": str(D3)}).json()["total"] == 0


def test_api_needs_the_token_and_good_dates(stored: ReportWorld, api: str, client: httpx.Client) -> None:
    assert httpx.get(f"{api}/api/reports/deliveries", params={"from": str(D), "to": str(D)}).status_code == 401
    cases: tuple[tuple[dict[str, str | int], str], ...] = (
        ({"from": "2026-13-01", "to": str(D)}, "from"),
        ({"from": str(D), "to": "yesterday"}, "to"),
        ({"from": str(D1), "to": str(D)}, "to"),  # backwards
        ({"from": "2024-01-01", "to": "2026-01-01"}, "to"),  # over a year
        ({"to": str(D)}, "from"),  # missing
        ({"from": str(D), "to": str(D), "page": 0}, "page"),
    )
    for params, field in cases:
        response = client.get("/api/reports/deliveries", params=params)
        assert response.status_code == 422, (params, response.text)
        assert any(d["loc"][-1] == field for d in response.json()["detail"]), response.text


def test_cli_shows_exports_and_backfills(stored: ReportWorld, db: Engine, tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["report", "deliveries", "--from", str(D), "--to", str(D3)])
    assert shown.exit_code == 0, shown.output
    assert "4 row(s)" in shown.output and "America/Los_Angeles" in shown.output
    as_json = runner.invoke(app, ["report", "deliveries", "--from", str(D), "--to", str(D3), "--json", "--limit", "2"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["total"] == 4 and [r["company_name"] for r in data["rows"]] == ["Alpha Electric", "Beta Plumbing"]
    assert data["rows"][1]["top_error_codes"] == "server_error (1), validation_error (1)"

    out = tmp_path / "outcomes.csv"
    exported = runner.invoke(app, ["report", "outcomes", "--from", str(D), "--to", str(D3), "--csv", str(out)])
    assert exported.exit_code == 0, exported.output
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["day"], r["technician_name"], r["referred"], r["revenue"]) for r in rows] == [
        (str(D), "Tina", "2", "250.00"),
        (str(D), "Tom", "1", "0.00"),
        (str(D1), "Tom", "1", "0.00"),
        (str(D2), "Tina", "1", "0.00"),
    ]

    bad = runner.invoke(app, ["report", "deliveries", "--from", "June 10", "--to", str(D)])
    assert bad.exit_code == 2 and "--from" in bad.output

    with db.begin() as conn:  # the backfill recomputes (and replaces) the days
        conn.execute(text("TRUNCATE report_delivery_daily, report_referral_outcomes_daily"))
    filled = runner.invoke(app, ["report", "backfill", "--from", str(D), "--to", str(D3)])  # default zone: TZ
    assert filled.exit_code == 0, filled.output
    assert "4 day(s) computed" in filled.output and "8 row(s)" in " ".join(filled.output.split())
    again = runner.invoke(app, ["report", "deliveries", "--from", str(D), "--to", str(D3), "--json"])
    assert again.exit_code == 0 and '"total": 4' in again.output
