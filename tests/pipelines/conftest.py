from collections.abc import Iterator

import pytest

from integration_core.settings import get_settings


@pytest.fixture(autouse=True)
def _no_lingering(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Runs materialized in-process here end as soon as their company has no due work."""
    monkeypatch.setenv("RUN_IDLE_SECONDS", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
