"""`make bench` throughput for Housecall Pro: the ServiceTitan scenario's bar, against the Housecall Pro sandbox.

`throughput_hcp_<mode>_latency_<ms>ms`: one Housecall Pro account whose sandbox budget is R = 20 requests/s, the
sandbox answering after 50 ms / 300 ms, `routings` referrals for distinct homeowners delivered by `drain` (each
delivery of a new homeowner with a phone and no e-mail: a search by phone, one by name, the customer, the lead =
4 requests; 1,000 routings ≈ 4,000 requests: the ramp and the tail weigh little in the ratio).
`budget_ratio` = requests accepted by the sandbox per second (first to last) ÷ R; `unhonoured_429` = 429s the
sandbox served (the client paces itself under the budget); `duplicates` from the sandbox's records per marker,
`lost` = routings left unsynced. Target: ratio ≥ 0.90, 0 unhonoured, 0 duplicates, 0 lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
from sqlalchemy import create_engine

from bench.__main__ import (
    ROOT,
    _drop_database,
    _fresh_database,
    _server_admin_url,
    _wait_for_sandbox,
    count_unsynced,
    throughput_result,
    throughput_world,
    timed_drain,
)

DEFAULT_ROUTINGS = 1000


def _start_hcp_sandbox() -> tuple[subprocess.Popen[bytes], str]:
    from integration_core.local.http_server import free_port

    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "sandboxes.housecallpro", "--port", str(port), "--no-demo", "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return _wait_for_sandbox(proc, f"http://127.0.0.1:{port}", "the Housecall Pro sandbox")


def throughput_hcp(
    latency_ms: int, routings: int = DEFAULT_ROUTINGS, budget: float = 20.0, mode: str = "lead"
) -> dict[str, Any]:
    admin, _ = _server_admin_url()
    db_name = f"si_bench_hcp_{os.getpid()}"
    url = _fresh_database(admin, db_name)
    sandbox, sandbox_url = _start_hcp_sandbox()
    try:
        account = httpx.post(
            sandbox_url + "/_sandbox/accounts", json={"rate": budget, "burst": int(budget)}, timeout=10
        ).json()
        company_id, api_key = account["company_id"], account["api_keys"][0]
        httpx.put(
            f"{sandbox_url}/_sandbox/accounts/{company_id}/faults",
            json={"latency": {"kind": "fixed", "ms": latency_ms}, "applies_to": "all"},
            timeout=10,
        ).raise_for_status()
        engine = create_engine(url)
        receiver_id = throughput_world(
            engine,
            "Bench HCP Receiver",
            {
                "provider": "housecallpro",
                "environment": "sandbox",
                "base_url": sandbox_url,
                "company_id": company_id,
                "api_key": api_key,
                "delivery_mode": mode,
                "rate_limit_per_second": budget,
                "rate_limit_burst": 10,
            },
            routings,
        )
        summary, wall = timed_drain(url, receiver_id)
        info = httpx.get(
            f"{sandbox_url}/_sandbox/accounts/{company_id}/inspect", params={"timestamps": "true"}, timeout=30
        ).json()
        unsynced = count_unsynced(engine)
        engine.dispose()
        records = "leads" if mode == "lead" else "jobs"
        per_marker = [places.get("tags", 0) for places in info["markers"][records].values()]
        duplicates = sum(n - 1 for n in per_marker if n > 1)
        head = {"scenario": f"throughput_hcp_{mode}_latency_{latency_ms}ms", "provider": "housecallpro"}
        return throughput_result(head, info, budget, routings, summary, wall, unsynced, duplicates, per_routing=True)
    finally:
        sandbox.terminate()
        sandbox.wait(10)
        _drop_database(admin, db_name)
