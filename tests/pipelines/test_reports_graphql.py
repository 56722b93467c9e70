"""What the Dagster UI shows of a report materialization, read through the webserver's GraphQL API (the API the UI
itself uses): the preview table, the markdown summary and the numbers the Plots tab draws."""

from __future__ import annotations

from typing import Any

import dagster as dg
import httpx
import pytest
from sqlalchemy import Engine

from integration_core.settings import get_settings
from pipelines.reports import delivery_report, referral_outcomes
from pipelines.resources import IntegrationResource
from tests.support.config import TEST_SECRET_KEY
from tests.support.dagster import serve_dagster_web
from tests.support.reports import TZ, D, make_report_world

QUERY = """
query SiReportMaterialization($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: 1) {
        partition
        metadataEntries {
          __typename
          label
          ... on TableMetadataEntry { table { records schema { columns { name type } } } }
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""


def _entries(url: str, asset: str) -> dict[str, dict[str, Any]]:
    response = httpx.post(
        f"{url}/graphql",
        json={"query": QUERY, "variables": {"key": {"path": [asset]}, "partitions": [D.isoformat()]}},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    node = body["data"]["assetOrError"]
    assert node["__typename"] == "Asset", node
    [materialization] = node["assetMaterializations"]
    assert materialization["partition"] == D.isoformat()
    return {e["label"]: e for e in materialization["metadataEntries"]}


def test_materialization_metadata_through_graphql(
    db: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_report_world(db)
    monkeypatch.setenv("REPORTING_TIMEZONE", TZ)
    monkeypatch.setenv("DELIVERY_SLA_SECONDS", "1000")
    monkeypatch.setenv("FAILURE_RATE_THRESHOLD", "0.6")
    get_settings.cache_clear()
    with serve_dagster_web() as dagster:
        result = dg.materialize(
            [delivery_report, referral_outcomes],
            partition_key=D.isoformat(),
            instance=dagster.instance,
            resources={"integration": IntegrationResource(database_url=database_url, secret_key=TEST_SECRET_KEY)},
        )
        assert result.success
        deliveries = _entries(dagster.url, "delivery_report")
        outcomes = _entries(dagster.url, "referral_outcomes")

    preview = deliveries["preview"]
    assert preview["__typename"] == "TableMetadataEntry"
    assert len(preview["table"]["records"]) == 2 and "Alpha Electric" in preview["table"]["records"][0]
    assert {"company_name", "routed_to_synced_p95_s"} <= {c["name"] for c in preview["table"]["schema"]["columns"]}
    assert deliveries["summary"]["__typename"] == "MarkdownMetadataEntry"
    assert "Deliveries for 2026-06-10" in deliveries["summary"]["mdStr"]
    assert (deliveries["routed"]["__typename"], deliveries["routed"]["intValue"]) == ("IntMetadataEntry", 4)
    assert (deliveries["worst_p95_s"]["__typename"], deliveries["worst_p95_s"]["floatValue"]) == (
        "FloatMetadataEntry",
        300.0,
    )
    assert outcomes["revenue"]["floatValue"] == 250.0 and outcomes["referred"]["intValue"] == 3
