"""The request-body limit (API_MAX_BODY_BYTES) holds before routing, auth and parsing: raw HTTP over loopback, so
the test controls exactly which bytes are sent (a declared 20 MB body is never sent at all)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine, func, select

from integration_core.api.app import create_app
from integration_core.api.limits import BodySizeLimit
from integration_core.db.models import Company
from integration_core.local.http_server import serve_in_thread
from integration_core.settings import Settings

TOKEN_HEADER = "Authorization: Bearer test-api-token-0123456789\r\n"


def _connect(base_url: str) -> socket.socket:
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


@pytest.fixture()
def small_api(db: Engine, settings: Settings) -> Iterator[str]:
    """The API with a 64 KiB body limit."""
    with serve_in_thread(create_app(settings.model_copy(update={"api_max_body_bytes": 65536}), engine=db)) as url:
        yield url


@pytest.mark.parametrize("token", [True, False])
def test_a_declared_20_mb_body_is_413_before_a_byte_of_it_is_read(small_api: str, db: Engine, token: bool) -> None:
    with _connect(small_api) as sock:
        sock.sendall(
            b"POST /api/admin/companies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + (TOKEN_HEADER.encode() if token else b"")
            + f"Content-Length: {20 * 1024 * 1024}\r\n\r\n".encode()
        )
        # nothing of the body was sent: the answer comes from the headers alone (and before the token is looked at)
        status, headers, body = _response(sock)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert "at most 65536 bytes" in json.loads(body)["detail"]


def test_a_chunked_body_over_the_limit_is_413_and_reaches_no_handler(small_api: str, db: Engine) -> None:
    chunk = b'{"name": "' + b"x" * 16_000 + b'"}'
    with _connect(small_api) as sock:
        sock.sendall(
            b"POST /api/admin/companies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + TOKEN_HEADER.encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(10):  # 160 KB in 16 KB chunks, never finished
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed once the limit was passed
        status, _, body = _response(sock)
    assert status == 413 and "at most 65536 bytes" in json.loads(body)["detail"]
    with db.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Company)) == 0


def test_a_chunked_body_within_the_limit_is_handled(small_api: str, db: Engine) -> None:
    payload = json.dumps({"name": "Chunked Roofing", "service_zip_codes": ["78701"]}).encode()

    def chunks() -> Iterator[bytes]:  # httpx sends a generator chunked, without Content-Length
        yield payload[:10]
        yield payload[10:]

    r = httpx.post(
        small_api + "/api/admin/companies",
        content=chunks(),
        headers={"Authorization": "Bearer test-api-token-0123456789", "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Chunked Roofing"


def test_a_body_within_the_limit_with_content_length_is_handled(client: httpx.Client, db: Engine) -> None:
    r = client.post("/api/admin/companies", json={"name": "Plain Roofing", "trade": "x" * 100})
    assert r.status_code == 201, r.text
    # the default limit (1 MiB) is far above any valid body
    big = client.post("/api/admin/companies", json={"name": "y" * (2 * 1024 * 1024)})
    assert big.status_code == 413 and "at most 1048576 bytes" in big.json()["detail"]


def test_limits_per_path_prefix() -> None:
    async def app(scope: object, receive: object, send: object) -> None:  # never called here
        raise AssertionError

    limit = BodySizeLimit(app, default=1024, limits={"/webhooks/": 5000, "/webhooks/big/": 9000})
    assert limit.limit_for("/api/jobs/") == 1024
    assert limit.limit_for("/webhooks/servicetitan") == 5000
    assert limit.limit_for("/webhooks/big/x") == 9000
    with pytest.raises(ValueError):
        BodySizeLimit(app, default=-1)
