"""The one-off carry-over to readable partition keys (pipelines/partition_keys.py): new keys registered, earlier
runs on bare company ids tagged with the company id, legacy keys kept (or dropped from the list only)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
from sqlalchemy import Engine, text

from integration_core.db.engine import session_scope
from pipelines.partition_keys import carry_over
from pipelines.partitions import COMPANY_ID_TAG, PARTITIONS


@pytest.fixture()
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def test_carry_over_keeps_history_reachable(db: Engine, instance: dg.DagsterInstance) -> None:
    with db.begin() as conn:
        rows = conn.execute(
            text("INSERT INTO companies (name) VALUES ('Bright Spark Electric'), ('Acme') RETURNING id, partition_key")
        ).all()
    (spark, spark_key), (_, acme_key) = rows
    instance.add_dynamic_partitions(PARTITIONS, [str(spark)])  # from before migration 0005
    old_run = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="deliver_routings",
            run_id=old_run,
            status=dg.DagsterRunStatus.FAILURE,
            tags={"dagster/partition": str(spark), "company": "Bright Spark Electric"},
        )
    )

    with session_scope(db) as session:
        carried = carry_over(instance, session)
    assert (carried.keys_added, carried.legacy_keys, carried.runs_tagged, carried.legacy_dropped) == (2, 1, 1, 0)
    assert set(instance.get_dynamic_partitions(PARTITIONS)) == {str(spark), spark_key, acme_key}
    run = instance.get_run_by_id(old_run)
    assert run is not None and run.tags[COMPANY_ID_TAG] == str(spark)
    # the company's whole history is one tag search
    found = instance.get_runs(filters=dg.RunsFilter(tags={COMPANY_ID_TAG: str(spark)}))
    assert [r.run_id for r in found] == [old_run]

    with session_scope(db) as session:
        again = carry_over(instance, session, drop_legacy=True)
    assert (again.keys_added, again.runs_tagged, again.legacy_dropped) == (0, 0, 1)
    assert set(instance.get_dynamic_partitions(PARTITIONS)) == {spark_key, acme_key}
    assert instance.get_run_by_id(old_run) is not None  # the run itself stays
