"""The HTTP API served over loopback for a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import Engine

from integration_core.settings import Settings
from tests.support.config import TEST_API_TOKEN


@contextmanager
def serve_api(engine: Engine, settings: Settings) -> Iterator[httpx.Client]:
    """The HTTP API over loopback with these settings; yields a client that sends the token."""
    from integration_core.api.app import create_app
    from integration_core.local.http_server import serve_in_thread

    with (
        serve_in_thread(create_app(settings, engine=engine)) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}, timeout=60) as client,
    ):
        yield client
