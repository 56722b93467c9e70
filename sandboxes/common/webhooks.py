"""Signed webhook delivery for the sandboxes: what a provider does when its back office moves a record.

One `WebhookEmitter` per sandbox process: per account (a ServiceTitan tenant, a Housecall Pro company) a target
URL, the signing secret, the signature header and encoding (and an optional signed timestamp header), and the
provider's retry schedule (ServiceTitan: 10, 30, 60 and 300 s after a failed attempt; `time_scale` shrinks it
in tests). Only a 2xx counts as delivered; anything else (or no answer within `timeout_s`) is tried again on the
schedule, then given up (counted). On demand: the next N events delivered twice (`duplicates`), held and
delivered newest first (`reorder`), or sent first with a wrong signature (`wrong_signatures`; the retry is
signed correctly, as when a provider's key is fixed). Deliveries run on the emitter's own threads, never on the
sandbox's event loop.

Control API (added to each sandbox's routes, docs/webhooks.md):

* ``GET /_sandbox/webhooks`` — every account's target (no secret) and counters
* ``PUT /_sandbox/webhooks/{account}`` — ``{"url", "secret", "header"?, "encoding"?, "timestamp_header"?,
  "retry_schedule"?, "time_scale"?, "timeout_s"?, "enabled"?}``
* ``DELETE /_sandbox/webhooks/{account}`` — stop sending for the account
* ``POST /_sandbox/webhooks/{account}/chaos`` — ``{"duplicates": n, "reorder": n, "wrong_signatures": n}``
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

Encoding = Literal["hex", "base64"]
SERVICETITAN_RETRY_SCHEDULE = (10.0, 30.0, 60.0, 300.0)
DELIVERY_LOG_SIZE = 10_000


def signature(secret: str, body: bytes, encoding: Encoding, timestamp: str | None = None) -> str:
    message = body if timestamp is None else timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@dataclass
class WebhookTarget:
    url: str
    secret: str
    header: str = "X-ServiceTitan-Signature"
    encoding: Encoding = "base64"
    timestamp_header: str | None = None
    retry_schedule: tuple[float, ...] = SERVICETITAN_RETRY_SCHEDULE
    time_scale: float = 1.0
    timeout_s: float = 10.0
    enabled: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "header": self.header,
            "encoding": self.encoding,
            "timestamp_header": self.timestamp_header,
            "retry_schedule": list(self.retry_schedule),
            "time_scale": self.time_scale,
            "timeout_s": self.timeout_s,
            "enabled": self.enabled,
            "secret_set": bool(self.secret),
        }


@dataclass
class AccountStats:
    emitted: int = 0
    delivered: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    duplicates_sent: int = 0
    wrong_signatures_sent: int = 0
    last_status: int | None = None
    last_error: str | None = None


@dataclass
class Chaos:
    duplicates: int = 0
    reorder: int = 0
    wrong_signatures: int = 0
    held: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    account: str = field(compare=False)
    event_id: str = field(compare=False)
    body: bytes = field(compare=False)
    attempt: int = field(compare=False, default=1)
    wrong_signature: bool = field(compare=False, default=False)


class WebhookEmitter:
    """Queues events per account and delivers them, signed, on its own threads (start() / stop())."""

    def __init__(
        self,
        workers: int = 8,
        *,
        header: str = "X-ServiceTitan-Signature",
        encoding: Encoding = "base64",
        timestamp_header: str | None = None,
    ) -> None:
        # what a PUT /_sandbox/webhooks/{account} gets when it does not say (the provider's defaults)
        self.defaults = {"header": header, "encoding": encoding, "timestamp_header": timestamp_header}
        self.targets: dict[str, WebhookTarget] = {}
        self.stats: dict[str, AccountStats] = {}
        self.chaos: dict[str, Chaos] = {}
        # event id -> (account, emitted at (epoch s), delivered at or None, attempts, last status)
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=DELIVERY_LOG_SIZE)
        self._by_event: dict[str, dict[str, Any]] = {}
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-webhook")
        self._client = httpx.Client(timeout=10.0, limits=httpx.Limits(max_connections=workers * 2))

    # -- configuration ---------------------------------------------------------------------------
    def configure(self, account: str, target: WebhookTarget | None) -> None:
        with self._cond:
            if target is None:
                self.targets.pop(account, None)
            else:
                self.targets[account] = target
                self.stats.setdefault(account, AccountStats())

    def set_chaos(self, account: str, *, duplicates: int = 0, reorder: int = 0, wrong_signatures: int = 0) -> Chaos:
        with self._cond:
            chaos = self.chaos.setdefault(account, Chaos())
            chaos.duplicates += duplicates
            chaos.reorder += reorder
            chaos.wrong_signatures += wrong_signatures
            return chaos

    def reset(self) -> None:
        with self._cond:
            self.targets.clear()
            self.stats.clear()
            self.chaos.clear()
            self._heap.clear()
            self.deliveries.clear()
            self._by_event.clear()

    def describe(self) -> dict[str, Any]:
        with self._cond:
            accounts = sorted(set(self.targets) | set(self.stats))
            return {
                "accounts": {
                    a: {
                        "target": self.targets[a].describe() if a in self.targets else None,
                        "stats": vars(self.stats.get(a, AccountStats())).copy(),
                        "chaos": {k: v for k, v in vars(self.chaos.get(a, Chaos())).items() if k != "held"},
                    }
                    for a in accounts
                },
                "pending": len(self._heap),
            }

    def delivery_log(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(d) for d in self.deliveries]

    # -- events ----------------------------------------------------------------------------------
    def emit(self, account: str, event_id: str, payload: dict[str, Any]) -> bool:
        """Queue one event for `account` (False: no target configured). Never blocks on the network."""
        with self._cond:
            target = self.targets.get(account)
            if target is None or not target.enabled:
                return False
            body = json.dumps(payload, separators=(",", ":")).encode()
            self.stats[account].emitted += 1
            record = {
                "event_id": event_id,
                "account": account,
                "emitted_at": time.time(),
                "delivered_at": None,
                "attempts": 0,
                "status": None,
            }
            self.deliveries.append(record)
            self._by_event[event_id] = record
            if len(self._by_event) > DELIVERY_LOG_SIZE:
                self._by_event.pop(next(iter(self._by_event)))
            chaos = self.chaos.get(account)
            copies = 1
            wrong = False
            if chaos is not None:
                if chaos.duplicates > 0:
                    chaos.duplicates -= 1
                    copies = 2
                if chaos.wrong_signatures > 0:
                    chaos.wrong_signatures -= 1
                    wrong = True
                if chaos.reorder > 0:
                    chaos.held.append((event_id, body))
                    chaos.reorder -= 1
                    if chaos.reorder == 0 or len(chaos.held) >= 50:
                        self._release_held(account, chaos)
                    return True
            now = time.monotonic()
            for copy in range(copies):
                self._push(
                    _Delivery(now + 0.02 * copy, next(self._seq), account, event_id, body, 1, wrong and not copy)
                )
            if copies == 2:
                self.stats[account].duplicates_sent += 1
            return True

    def _release_held(self, account: str, chaos: Chaos) -> None:
        """Deliver held events newest first, a little apart so the order is the one the receiver sees."""
        now = time.monotonic()
        for i, (event_id, body) in enumerate(reversed(chaos.held)):
            self._push(_Delivery(now + 0.05 * i, next(self._seq), account, event_id, body))
        chaos.held.clear()

    def _push(self, delivery: _Delivery) -> None:
        heapq.heappush(self._heap, delivery)
        self._cond.notify()

    # -- the loop --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0].due > time.monotonic()):
                    wait = (self._heap[0].due - time.monotonic()) if self._heap else None
                    self._cond.wait(timeout=max(0.0, wait) if wait is not None else None)
                if self._stopping:
                    return
                delivery = heapq.heappop(self._heap)
                target = self.targets.get(delivery.account)
            if target is None or not target.enabled:
                continue
            self._pool.submit(self._send, delivery, target)

    def _send(self, delivery: _Delivery, target: WebhookTarget) -> None:
        timestamp = str(int(time.time())) if target.timestamp_header else None
        secret = target.secret + "-wrong" if delivery.wrong_signature else target.secret
        headers = {
            "Content-Type": "application/json",
            target.header: signature(secret, delivery.body, target.encoding, timestamp),
            "User-Agent": "sandbox-webhooks/1",
        }
        if target.timestamp_header and timestamp:
            headers[target.timestamp_header] = timestamp
        status: int | None = None
        error: str | None = None
        try:
            response = self._client.post(target.url, content=delivery.body, headers=headers, timeout=target.timeout_s)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        ok = status is not None and 200 <= status < 300
        with self._cond:
            stats = self.stats.setdefault(delivery.account, AccountStats())
            stats.attempts += 1
            stats.last_status, stats.last_error = status, error
            if delivery.wrong_signature:
                stats.wrong_signatures_sent += 1
            record = self._by_event.get(delivery.event_id)
            if record is not None:
                record["attempts"] += 1
                record["status"] = status
            if ok:
                stats.delivered += 1
                if record is not None and record["delivered_at"] is None:
                    record["delivered_at"] = time.time()
                return
            stats.failed_attempts += 1
            if delivery.attempt > len(target.retry_schedule):
                stats.gave_up += 1
                return
            delay = target.retry_schedule[delivery.attempt - 1] * target.time_scale
            self._push(
                _Delivery(
                    time.monotonic() + delay,
                    next(self._seq),
                    delivery.account,
                    delivery.event_id,
                    delivery.body,
                    delivery.attempt + 1,
                )
            )

    # -- control API -----------------------------------------------------------------------------
    def routes(self, prefix: str = "/_sandbox/webhooks") -> list[Route]:
        async def list_all(request: Request) -> Response:
            return JSONResponse(self.describe())

        async def put(request: Request) -> Response:
            account = str(request.path_params["account"])
            try:
                body = json.loads(await request.body() or b"{}")
                target = parse_target({**{k: v for k, v in self.defaults.items() if v is not None}, **body})
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
            self.configure(account, target)
            return JSONResponse({"account": account, "target": target.describe()})

        async def delete(request: Request) -> Response:
            account = str(request.path_params["account"])
            self.configure(account, None)
            return JSONResponse({"account": account, "target": None})

        async def chaos(request: Request) -> Response:
            account = str(request.path_params["account"])
            try:
                body = json.loads(await request.body() or b"{}")
                counts = {k: int(body.get(k, 0)) for k in ("duplicates", "reorder", "wrong_signatures")}
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
            if any(v < 0 for v in counts.values()) or set(body) - set(counts):
                return JSONResponse({"error": "duplicates, reorder, wrong_signatures: integers >= 0"}, 422)
            state = self.set_chaos(account, **counts)
            return JSONResponse({k: v for k, v in vars(state).items() if k != "held"})

        async def log_(request: Request) -> Response:
            return JSONResponse({"deliveries": self.delivery_log()})

        return [
            Route(prefix, list_all, methods=["GET"]),
            Route(prefix + "/deliveries", log_, methods=["GET"]),
            Route(prefix + "/{account}", put, methods=["PUT"]),
            Route(prefix + "/{account}", delete, methods=["DELETE"]),
            Route(prefix + "/{account}/chaos", chaos, methods=["POST"]),
        ]


def parse_target(body: Any) -> WebhookTarget:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(body) - {
        "url",
        "secret",
        "header",
        "encoding",
        "timestamp_header",
        "retry_schedule",
        "time_scale",
        "timeout_s",
        "enabled",
    }
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]}")
    url, secret = body.get("url"), body.get("secret")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError("url: an http(s) URL is required")
    if not isinstance(secret, str) or not secret:
        raise ValueError("secret is required")
    encoding = body.get("encoding", "base64")
    if encoding not in ("hex", "base64"):
        raise ValueError("encoding: hex or base64")
    schedule = body.get("retry_schedule", list(SERVICETITAN_RETRY_SCHEDULE))
    if not isinstance(schedule, list) or not all(isinstance(s, int | float) and s >= 0 for s in schedule):
        raise ValueError("retry_schedule: a list of seconds >= 0")
    scale = float(body.get("time_scale", 1.0))
    timeout = float(body.get("timeout_s", 10.0))
    if scale <= 0 or timeout <= 0:
        raise ValueError("time_scale and timeout_s must be > 0")
    return WebhookTarget(
        url=url,
        secret=secret,
        header=str(body.get("header") or "X-ServiceTitan-Signature"),
        encoding="hex" if encoding == "hex" else "base64",
        timestamp_header=body.get("timestamp_header") or None,
        retry_schedule=tuple(float(s) for s in schedule),
        time_scale=scale,
        timeout_s=timeout,
        enabled=bool(body.get("enabled", True)),
    )


class ForwardingListener:
    """A sandbox event listener (`on_event(kind, payload)`, as the Housecall Pro sandbox calls it) that sends the
    payload as it is, keyed by the account named in `payload[account_key]` and `payload[id_key]`."""

    def __init__(self, emitter: WebhookEmitter, *, account_key: str = "company_id", id_key: str = "id") -> None:
        self.emitter = emitter
        self.account_key = account_key
        self.id_key = id_key

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        account = payload.get(self.account_key)
        if account is None or str(account) not in self.emitter.targets:
            return
        event_id = str(payload.get(self.id_key) or "")
        self.emitter.emit(str(account), event_id or f"{kind}-{time.time_ns()}", payload)
