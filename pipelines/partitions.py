"""One partition per receiving company, keyed by `companies.partition_key`: a slug of the name at creation plus the
start of the id (`bright-spark-electric-3f2a`), issued by the database and never changed (a rename changes the name
in tags and metadata, not the key). Partitions added before migration 0005 are bare company ids; they stay in the
instance with their history (docs/reports.md, "Partition keys")."""

from __future__ import annotations

import dagster as dg

PARTITIONS = "receiving_companies"
receiving_companies = dg.DynamicPartitionsDefinition(name=PARTITIONS)

COMPANY_ID_TAG = "si/company_id"  # on every delivery run: a company's runs, old (UUID) and new partitions alike
