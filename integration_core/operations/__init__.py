"""Operator read models and actions: admin queries, health, routing views, the Dagster client."""
