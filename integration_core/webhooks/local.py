"""`make run` / `si run`: the local sandboxes post signed webhooks to the local API.

After the API is up, every sandbox connection (a loopback `base_url`) gets webhook settings if it has none (a
generated secret, the provider's defaults), and its sandbox is told where to send and how to sign
(`PUT /_sandbox/webhooks/{account}`). Idempotent: run again on every start (the sandboxes keep no state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, select

from integration_core.db.engine import get_engine, session_scope
from integration_core.db.models import ProviderConnection, WebhookEndpoint
from integration_core.settings import Settings
from integration_core.webhooks import endpoints

log = logging.getLogger(__name__)

SANDBOX_PROVIDERS = ("servicetitan", "housecallpro")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Wired:
    provider: str
    account: str
    sandbox_url: str
    ok: bool
    detail: str = ""


def wire_local_sandboxes(
    settings: Settings, *, engine: Engine | None = None, api_url: str | None = None, timeout: float = 5.0
) -> list[Wired]:
    api = (api_url or f"http://127.0.0.1:{settings.api_port}").rstrip("/")
    secret_key = settings.secret_key.get_secret_value()
    targets: list[tuple[str, str, str, dict[str, object]]] = []
    with session_scope(engine or get_engine()) as session:
        connections = session.scalars(
            select(ProviderConnection).where(
                ProviderConnection.environment == "sandbox", ProviderConnection.provider.in_(SANDBOX_PROVIDERS)
            )
        ).all()
        for conn in connections:
            base = (conn.base_url or "").rstrip("/")
            if not base or urlsplit(base).hostname not in LOOPBACK:
                continue
            if session.get(WebhookEndpoint, conn.id) is None:
                endpoints.configure(
                    session, conn.id, secret=endpoints.generate_secret(), secret_key=secret_key, actor="si run"
                )
            endpoint = endpoints.load(session, conn.id, secret_key)
            if endpoint is None or not endpoint.enabled:
                continue
            signing = endpoint.signing
            body: dict[str, object] = {
                "url": f"{api}/webhooks/{conn.provider}?connection={conn.id}",
                "secret": signing.secret,
                "header": signing.header,
                "encoding": signing.encoding,
            }
            if signing.timestamp_header:
                body["timestamp_header"] = signing.timestamp_header
            targets.append((conn.provider, str(conn.account_id), base, body))
    out: list[Wired] = []
    with httpx.Client(timeout=timeout) as client:
        for provider, account, base, body in targets:
            try:
                r = client.put(f"{base}/_sandbox/webhooks/{account}", json=body)
                ok, detail = r.is_success, "" if r.is_success else f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                ok, detail = False, type(exc).__name__
            if not ok:
                log.warning("sandbox %s (%s) not wired for webhooks: %s", base, provider, detail)
            out.append(Wired(provider, account, base, ok, detail))
    return out
