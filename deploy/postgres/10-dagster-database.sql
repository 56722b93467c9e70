-- Dagster keeps its run, event and schedule storage in its own database on the same server, never among the
-- service's tables (dagster.yaml: DAGSTER_POSTGRES_URL). Runs once, when the data volume is first initialised.
CREATE DATABASE dagster;
