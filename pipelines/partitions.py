"""One partition per receiving company (its stable id; the name travels in tags and metadata)."""

from __future__ import annotations

import dagster as dg

PARTITIONS = "receiving_companies"
receiving_companies = dg.DynamicPartitionsDefinition(name=PARTITIONS)
