"""The connection budget: the configured maximum by component, against the real server's max_connections."""

from __future__ import annotations

from sqlalchemy import Engine, text

from integration_core.db import budget
from integration_core.settings import Settings
from tests.support.config import TEST_API_TOKEN, TEST_SECRET_KEY


def _settings(**env: object) -> Settings:
    return Settings(ENVIRONMENT="test", API_TOKEN=TEST_API_TOKEN, SECRET_KEY=TEST_SECRET_KEY, **env)  # type: ignore[arg-type]


def test_the_defaults_fit_a_stock_server() -> None:
    """PostgreSQL's default max_connections is 100: the service's defaults must fit under it."""
    settings = _settings()
    total = budget.configured_max(settings)
    assert total <= 100
    lines = {x.component: x for x in budget.plan(settings)}
    runs = lines["delivery runs"]
    assert runs.connections == 16 * (1 + budget.DAGSTER_PER_RUN_CONNECTIONS) == 48
    assert "16 runs" in runs.how and "RUN_DB_POOL_SIZE" in runs.how
    assert sum(x.connections for x in lines.values()) == total


def test_check_reads_the_server_and_warns_with_the_numbers(db: Engine) -> None:
    with db.connect() as conn:
        server_max = int(conn.execute(text("SHOW max_connections")).scalar_one())
        fits = budget.check(conn, _settings())
        assert fits.max_connections == server_max and fits.current is not None and fits.current >= 1
        too_many = budget.check(conn, _settings(DAGSTER_MAX_CONCURRENT_RUNS=server_max, RUN_DB_POOL_SIZE=4))
    assert fits.fits is True and fits.warning is None
    assert too_many.fits is False and too_many.warning is not None
    total = budget.configured_max(_settings(DAGSTER_MAX_CONCURRENT_RUNS=server_max, RUN_DB_POOL_SIZE=4))
    assert f"up to {total} PostgreSQL connections" in too_many.warning
    assert f"max_connections = {server_max}" in too_many.warning
    assert f"{server_max} runs (DAGSTER_MAX_CONCURRENT_RUNS)" in too_many.warning
    assert "DAGSTER_MAX_CONCURRENT_RUNS" in too_many.warning and "PgBouncer" in too_many.warning
