"""Database layer: engines, the embedded server, ORM models and queries."""
