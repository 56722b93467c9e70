"""Housecall Pro sandbox: per-company throttling (429 with and without Retry-After), 429 storms and injected
faults (5xx, commit-then-fail with a 5xx or a dropped connection, held requests), each observable by a client
over real HTTP and reflected in the inspection endpoint. Every exchange is validated against the definition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.support.housecallpro import HcpClient, HcpSandbox, customer_payload, lead_payload


def leads_tagged(client: HcpClient, marker: str) -> int:
    tags = {t["name"]: t["id"] for t in client.get("/tags", params={"page_size": 200}).json()["tags"]}
    if marker not in tags:
        return 0
    total: int = client.get("/leads", params={"tag_ids": [tags[marker]]}).json()["total_items"]
    return total


def test_throttled_with_retry_after(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account(rate=0.5, burst=3, retry_after="always")  # a token every 2 s
    statuses = [client.get("/leads").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    limited = client.get("/leads")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["status"] == 429
    deadline = time.monotonic() + 10
    while (after := client.get("/leads").status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert after == 200
    report = hcp.inspect(client.account.company_id)
    assert report["rate_limited"] >= 3 and report["rate_limited_without_retry_after"] == 0
    assert report["requests"]["GET /leads"]["429"] >= 3


def test_throttled_without_retry_after(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account(rate=0.1, burst=1, retry_after="never")
    assert client.get("/leads").status_code == 200
    limited = client.get("/leads")
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert hcp.inspect(client.account.company_id)["rate_limited_without_retry_after"] == 1


def test_sometimes_retry_after_is_seeded_and_mixed(hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account(rate=0.01, burst=1, retry_after="sometimes")
    assert client.get("/leads").status_code == 200
    headers = ["retry-after" in client.get("/leads").headers for _ in range(30)]
    assert any(headers) and not all(headers)


def test_rate_limit_is_per_company_and_reconfigurable(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    a, b = hcp_account(rate=0.1, burst=1), hcp_account(rate=0.1, burst=1)
    assert a.get("/leads").status_code == 200 and a.get("/leads").status_code == 429
    assert b.get("/leads").status_code == 200  # another company's bucket
    hcp.call("PUT", f"/accounts/{a.account.company_id}/rate-limit", {"rate": 100, "burst": 100})
    time.sleep(0.05)
    assert a.get("/leads").status_code == 200
    assert hcp.call("GET", f"/accounts/{a.account.company_id}")["rate_limit"]["rate"] == 100


@pytest.mark.parametrize("header", [True, False])
def test_storm_with_and_without_retry_after(
    hcp: HcpSandbox, hcp_account: Callable[..., HcpClient], header: bool
) -> None:
    client = hcp_account()
    answer = hcp.storm(client.account.company_id, seconds=1.5, retry_after=2, retry_after_header=header)
    assert answer["retry_after"] == (2 if header else None)
    storm = [client.get("/leads") for _ in range(3)]
    assert {r.status_code for r in storm} == {429}
    assert all(("retry-after" in r.headers) is header for r in storm)
    if header:
        assert {r.headers["retry-after"] for r in storm} == {"2"}
    assert hcp.inspect(client.account.company_id)["faults"]["storm_active"] is True
    time.sleep(1.6)
    assert client.get("/leads").status_code == 200


def test_storm_on_writes_only(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    hcp.storm(client.account.company_id, seconds=30, applies_to="writes")
    assert client.get("/leads").status_code == 200
    assert client.post("/customers", json=customer_payload()).status_code == 429
    assert hcp.inspect(client.account.company_id)["records"]["customers"] == 0
    hcp.clear_faults(client.account.company_id)  # clearing faults ends the storm
    assert client.post("/customers", json=customer_payload()).status_code == 201


def test_error_fault_commits_nothing(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    hcp.put_faults(client.account.company_id, error_rate=1.0, error_statuses=[503])
    marker = str(uuid.uuid4())
    response = client.post("/leads", json=lead_payload(marker))
    assert response.status_code == 503 and response.json()["error"]["status"] == 503
    assert client.get("/leads").status_code == 200  # faults apply to writes by default
    report = hcp.inspect(client.account.company_id)
    assert report["faults"]["counts"] == {"error": 1} and report["requests"]["POST /leads"] == {"503": 1}
    assert report["records"]["leads"] == 0 and report["records"]["customers"] == 0


def test_commit_then_fail_status_applies_the_write(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    hcp.put_faults(client.account.company_id, commit_then_fail_rate=1.0, commit_then_fail_status=500)
    marker = str(uuid.uuid4())
    assert client.post("/leads", json=lead_payload(marker)).status_code == 500
    hcp.clear_faults(client.account.company_id)
    assert leads_tagged(client, marker) == 1  # it was written
    log = hcp.inspect(client.account.company_id)["faults"]["log"]
    assert log == [] or log[0]["fault"] == "commit_then_fail"  # clearing faults empties the log


def test_commit_then_drop_applies_the_write(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    hcp.put_faults(client.account.company_id, commit_then_fail_rate=1.0, commit_then_fail_mode="drop")
    marker = str(uuid.uuid4())
    raw = httpx.Client(base_url=hcp.url, headers={"Authorization": f"Token {client.account.api_key}"}, timeout=10)
    with raw, pytest.raises(httpx.TransportError):  # the connection is closed mid-response
        raw.post("/leads", json=lead_payload(marker))
    report = hcp.inspect(client.account.company_id)
    assert report["requests"]["POST /leads"] == {"dropped": 1} and report["records"]["leads"] == 1
    hcp.clear_faults(client.account.company_id)
    assert leads_tagged(client, marker) == 1


def test_held_request_then_commits_or_not(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    company = client.account.company_id
    hcp.put_faults(company, timeout_rate=1.0, timeout_s=0.3, timeout_commits=True)
    committed = client.post("/customers", json=customer_payload())
    assert committed.status_code == 201  # held, then answered: a client with a shorter timeout gives up first
    with pytest.raises(httpx.ReadTimeout):
        client.post("/customers", json=customer_payload(first_name="Slow"), timeout=0.05)
    hcp.put_faults(company, timeout_rate=1.0, timeout_s=0.2, timeout_commits=False)
    assert client.post("/customers", json=customer_payload(first_name="Never")).status_code == 504
    time.sleep(0.4)  # let the held-and-committed write finish on the server
    hcp.clear_faults(company)
    names = sorted(c["first_name"] for c in client.get("/customers").json()["customers"])
    assert names == ["Jane", "Slow"]


def test_latency_and_seeded_fault_sequence(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account(rate=1000, burst=1000)  # no throttling in the way of the sequence
    company = client.account.company_id

    def run() -> list[int]:
        hcp.put_faults(company, seed=7, error_rate=0.5, applies_to="all", latency={"kind": "fixed", "ms": 1})
        return [client.get("/tags").status_code for _ in range(12)]

    first = run()
    assert hcp.inspect(company)["faults"]["counts"]["latency"] == 12
    second = run()
    assert first == second, (first, second)
    assert 200 in first and {500, 502, 503} & set(first)


def test_fault_payload_errors_are_422(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    company = hcp_account().account.company_id
    bad = hcp.control.put(f"/_sandbox/accounts/{company}/faults", json={"error_rate": 2})
    assert bad.status_code == 422 and bad.json()["field"] == "error_rate"
    bad = hcp.control.post(f"/_sandbox/accounts/{company}/storm", json={"seconds": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "seconds"


def test_drop_before_commit_writes_nothing(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    company = client.account.company_id
    hcp.put_faults(company, drop_rate=1.0)
    m = str(uuid.uuid4())
    raw = httpx.Client(base_url=hcp.url, headers={"Authorization": f"Token {client.account.api_key}"}, timeout=10)
    with raw, pytest.raises(httpx.TransportError):  # the same truncated answer as commit-then-fail `drop`
        raw.post("/leads", json=lead_payload(m))
    assert client.get("/leads").status_code == 200  # writes only, by default
    report = hcp.inspect(company)
    assert report["requests"]["POST /leads"] == {"dropped_before_commit": 1}
    assert report["records"]["leads"] == 0 and report["faults"]["counts"] == {"drop": 1}
    assert report["faults"]["log"][0]["fault"] == "drop"
    assert hcp.call("GET", f"/accounts/{company}/faults")["faults"]["drop_rate"] == 1.0


def test_drop_rate_is_the_overall_share_and_seeded(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account(rate=1000, burst=1000)
    company = client.account.company_id

    def run() -> list[str]:
        hcp.put_faults(company, seed=3, applies_to="all", error_rate=0.25, error_statuses=[500], drop_rate=0.25)
        raw = httpx.Client(base_url=hcp.url, headers={"Authorization": f"Token {client.account.api_key}"}, timeout=10)
        outcomes = []
        with raw:
            for _ in range(200):
                try:
                    outcomes.append(str(raw.get("/tags").status_code))
                except httpx.TransportError:
                    outcomes.append("drop")
        return outcomes

    first = run()
    assert run() == first
    assert 30 <= first.count("drop") <= 70 and 30 <= first.count("500") <= 70  # 50 each expected
    bad = hcp.control.put(f"/_sandbox/accounts/{company}/faults", json={"error_rate": 0.6, "drop_rate": 0.6})
    assert bad.status_code == 422 and bad.json()["field"] == "drop_rate"
