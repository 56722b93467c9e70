"""One-off after migration 0005: carry a Dagster instance over to the readable partition keys
(`python -m pipelines.partition_keys [--drop-legacy]`, with the instance's DAGSTER_HOME; docs/reports.md).

1. Registers every company's `partition_key` in the `receiving_companies` partitions (the sensor would add them
   one by one as work arrives; this adds them all at once, so that every company is listed).
2. Tags every earlier delivery run whose partition is a bare company id with `si/company_id`, so that a company's
   whole history is one search in the UI (Runs → filter by tag `si/company_id=<id>`), old and new runs alike.
3. With `--drop-legacy`, removes the bare-id partitions from the partition list. Nothing else is deleted: their
   runs, logs and materializations (under the asset's old name `fsm_deliveries`) stay in the instance and
   remain readable (Runs, and Assets → fsm_deliveries). Without it, the old keys stay listed next to the new.

Idempotent: a second run adds, tags and drops nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import asdict, dataclass

import dagster as dg
from sqlalchemy import select
from sqlalchemy.orm import Session

from integration_core.db.models import Company
from pipelines.partitions import COMPANY_ID_TAG, PARTITIONS

DELIVERY_JOB = "deliver_routings"
CHUNK = 1000


@dataclass(frozen=True)
class Carried:
    companies: int
    keys_added: int
    legacy_keys: int
    runs_tagged: int
    legacy_dropped: int


def _is_uuid(key: str) -> bool:
    try:
        uuid.UUID(key)
    except ValueError:
        return False
    return True


def carry_over(instance: dg.DagsterInstance, session: Session, *, drop_legacy: bool = False) -> Carried:
    keys: dict[str, uuid.UUID] = {str(k): cid for k, cid in session.execute(select(Company.partition_key, Company.id))}
    existing = set(instance.get_dynamic_partitions(PARTITIONS))
    new = sorted(set(keys) - existing)
    for start in range(0, len(new), CHUNK):
        instance.add_dynamic_partitions(PARTITIONS, new[start : start + CHUNK])
    legacy = sorted(k for k in existing if _is_uuid(k))

    tagged = 0
    cursor: str | None = None
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(job_name=DELIVERY_JOB), limit=CHUNK, cursor=cursor, ascending=True
        )
        if not records:
            break
        for record in records:
            tags = record.dagster_run.tags
            partition = tags.get("dagster/partition", "")
            if COMPANY_ID_TAG not in tags and _is_uuid(partition):
                instance.add_run_tags(record.dagster_run.run_id, {COMPANY_ID_TAG: str(uuid.UUID(partition))})
                tagged += 1
        cursor = records[-1].dagster_run.run_id

    dropped = 0
    if drop_legacy:
        for key in legacy:
            instance.delete_dynamic_partition(PARTITIONS, key)
            dropped += 1
    return Carried(len(keys), len(new), len(legacy), tagged, dropped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drop-legacy", action="store_true", help="remove bare-id partitions from the list")
    args = parser.parse_args(argv)
    from integration_core.db.engine import get_engine, session_scope

    with dg.DagsterInstance.get() as instance, session_scope(get_engine()) as session:
        carried = carry_over(instance, session, drop_legacy=args.drop_legacy)
    print(json.dumps(asdict(carried), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
