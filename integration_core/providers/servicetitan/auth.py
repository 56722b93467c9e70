"""ServiceTitan OAuth 2 client credentials as an ``httpx.Auth``.

- Tokens are cached **process-wide** (:data:`DEFAULT_TOKEN_CACHE`) per (token URL, client id, secret fingerprint):
  ServiceTitan throttles token requests, and every run/provider object for a tenant shares one token.
  The secret's fingerprint is part of the key so a rotated secret never reuses a token obtained with the old one.
- A token is refreshed ``refresh_margin`` seconds (default 60) before it expires. The margin is capped at half
  the token's lifetime so a short-lived token (a sandbox can issue them) is still reused.
- Refreshes are **single-flight**: concurrent requests that find no fresh token wait on one lock (per token key
  and event loop) and the first one fetches; the others reuse its token.
- A 401 from the API invalidates *that* token (only if still cached, so 50 concurrent 401s cause one refresh),
  fetches a new one and sends the request once more. A second 401 is returned to the client, which raises
  ``AuthFailed``. Resending after a 401 is safe: the request was refused before it was processed.
- The token request is sent by the auth itself (not yielded through the flow), so its failures are classified
  here as token failures and can never be mistaken for the outcome of the API write being authenticated.
- ``clock`` (a monotonic seconds function) is injectable for tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr, ValidationError

from integration_core.providers.base import Environment, Retryable
from integration_core.providers.servicetitan.errors import classify_response, classify_transport_error
from integration_core.providers.servicetitan.models import TokenResponse

__all__ = [
    "DEFAULT_REFRESH_MARGIN",
    "DEFAULT_TOKEN_CACHE",
    "TOKEN_URLS",
    "AccessToken",
    "ServiceTitanAuth",
    "TokenCache",
    "token_url_for",
]

TOKEN_URLS: dict[str, str] = {
    "production": "https://auth.servicetitan.io/connect/token",
    "integration": "https://auth-integration.servicetitan.io/connect/token",
}
DEFAULT_REFRESH_MARGIN = 60.0
TOKEN_TIMEOUT = httpx.Timeout(connect=5.0, read=15.0, write=5.0, pool=5.0)

Clock = Callable[[], float]
TokenKey = tuple[str, str, str]


def token_url_for(environment: Environment, base_url: str | None = None) -> str:
    """The token endpoint: ServiceTitan's per environment, ``{base_url}/connect/token`` for the sandbox."""
    if environment == "sandbox":
        if not base_url:
            raise ValueError("the sandbox environment needs a base_url")
        return base_url.rstrip("/") + "/connect/token"
    return TOKEN_URLS[environment]


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    obtained_at: float
    expires_at: float

    def fresh(self, now: float, margin: float) -> bool:
        lifetime = self.expires_at - self.obtained_at
        return now < self.expires_at - min(margin, lifetime / 2)


class TokenCache:
    """Access tokens shared by every client in the process, plus the single-flight locks that fill it."""

    def __init__(self) -> None:
        self._tokens: dict[TokenKey, AccessToken] = {}
        self._mutex = threading.Lock()
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[TokenKey, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )
        self.fetches = 0  # token requests made through this cache (observability and tests)

    def get(self, key: TokenKey) -> AccessToken | None:
        with self._mutex:
            return self._tokens.get(key)

    def put(self, key: TokenKey, token: AccessToken) -> None:
        with self._mutex:
            self._tokens[key] = token

    def invalidate(self, key: TokenKey, value: str | None = None) -> None:
        """Drop the cached token (only if it is still ``value``, when given)."""
        with self._mutex:
            current = self._tokens.get(key)
            if current is not None and (value is None or current.value == value):
                del self._tokens[key]

    def clear(self) -> None:
        with self._mutex:
            self._tokens.clear()

    def lock(self, key: TokenKey) -> asyncio.Lock:
        """The refresh lock for ``key`` on the running event loop (asyncio locks cannot cross loops)."""
        loop = asyncio.get_running_loop()
        with self._mutex:
            per_loop = self._locks.setdefault(loop, {})
            return per_loop.setdefault(key, asyncio.Lock())


DEFAULT_TOKEN_CACHE = TokenCache()
_NO_AUTH = httpx.Auth()  # the token request itself is unauthenticated


class ServiceTitanAuth(httpx.Auth):
    """Adds ``Authorization: Bearer …`` and ``ST-App-Key`` to every API request (async clients only)."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        app_key: SecretStr,
        http: httpx.AsyncClient,
        cache: TokenCache | None = None,
        clock: Clock = time.monotonic,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        timeout: httpx.Timeout = TOKEN_TIMEOUT,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._app_key = app_key
        self._http = http
        self._cache = DEFAULT_TOKEN_CACHE if cache is None else cache
        self._clock = clock
        self._margin = refresh_margin
        self._timeout = timeout
        fingerprint = hashlib.sha256(client_secret.get_secret_value().encode()).hexdigest()[:16]
        self._key: TokenKey = (token_url, client_id, fingerprint)

    def __repr__(self) -> str:
        return f"ServiceTitanAuth(token_url={self._token_url!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ServiceTitanAuth supports httpx.AsyncClient only")
        yield request  # pragma: no cover - makes this a generator

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        self._apply(request, token)
        response = yield request
        if response.status_code == 401:
            self._cache.invalidate(self._key, token.value)
            token = await self.token(stale=token)
            self._apply(request, token)
            yield request

    def _apply(self, request: httpx.Request, token: AccessToken) -> None:
        request.headers["Authorization"] = f"Bearer {token.value}"
        request.headers["ST-App-Key"] = self._app_key.get_secret_value()

    async def token(self, *, stale: AccessToken | None = None) -> AccessToken:
        """A fresh token from the cache, fetching one (single-flight) if needed.

        Args:
            stale: a token the API just refused; a cached token equal to it is not reused.
        """
        cached = self._usable(self._cache.get(self._key), stale)
        if cached is not None:
            return cached
        async with self._cache.lock(self._key):
            cached = self._usable(self._cache.get(self._key), stale)
            if cached is not None:
                return cached
            token = await self._fetch()
            self._cache.put(self._key, token)
            return token

    def _usable(self, token: AccessToken | None, stale: AccessToken | None) -> AccessToken | None:
        if token is None or not token.fresh(self._clock(), self._margin):
            return None
        if stale is not None and token.value == stale.value:
            return None
        return token

    async def _fetch(self) -> AccessToken:
        self._cache.fetches += 1
        secret = self._client_secret.get_secret_value()
        started = self._clock()
        try:
            response = await self._http.post(
                self._token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._client_id,
                    "client_secret": secret,
                },
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                auth=_NO_AUTH,
            )
        except httpx.TransportError as exc:
            # A token request never writes anything: every transport failure is retryable.
            raise Retryable(
                classify_transport_error(exc, operation="get_token", write=False).message,
                code="token_endpoint_unavailable",
            ) from exc
        if not response.is_success:
            raise classify_response(
                response,
                operation="get_token",
                write=False,
                token_endpoint=True,
                sensitive=(secret, self._client_id, self._app_key.get_secret_value()),
            )
        try:
            parsed = TokenResponse.model_validate_json(response.content)
        except ValidationError:
            raise Retryable("get_token: unreadable token response", code="bad_token_response") from None
        if parsed.token_type.lower() != "bearer":
            raise Retryable("get_token: unexpected token type", code="bad_token_response")
        return AccessToken(value=parsed.access_token, obtained_at=started, expires_at=started + parsed.expires_in)
