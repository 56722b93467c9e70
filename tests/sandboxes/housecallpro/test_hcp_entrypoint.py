"""The Housecall Pro sandbox's entry point and its place in `si run` (`integration_core.local.stack`)."""

from __future__ import annotations

import httpx

from integration_core.local.stack import services
from integration_core.settings import Settings
from tests.support.housecallpro import serve_hcp_sandbox


def test_python_m_entry_point_takes_office_seed_and_limits() -> None:
    args = ("--office", "--office-pace", "0.25", "--seed", "3", "--rate", "7", "--burst", "9", "--retry-after", "never")
    with serve_hcp_sandbox(*args) as url:
        office = httpx.get(f"{url}/_sandbox/office", timeout=10).json()
        assert (office["enabled"], office["pace_s"], office["seed"]) == (True, 0.25, 3)
        (demo,) = httpx.get(f"{url}/_sandbox/accounts", timeout=10).json()["accounts"]
        assert demo["name"] == "ElectroFix" and demo["rate_limit"] == {"rate": 7.0, "burst": 9, "retry_after": "never"}
    with serve_hcp_sandbox("--no-demo") as url:
        assert httpx.get(f"{url}/_sandbox/accounts", timeout=10).json()["accounts"] == []


def test_si_run_starts_it_beside_the_servicetitan_sandbox() -> None:
    settings = Settings(
        HOUSECALLPRO_SANDBOX_URL="http://127.0.0.1:8123", SANDBOX_OFFICE_ENABLED=False, SANDBOX_OFFICE_PACE_SECONDS=2
    )
    by_name = {s.name: s for s in services(settings)}
    hcp = by_name["housecallpro-sandbox"]
    assert hcp.argv[1:3] == ["-m", "sandboxes.housecallpro"]
    assert hcp.argv[3:8] == ["--port", "8123", "--no-office", "--office-pace", "2.0"]
    assert hcp.port == 8123 and hcp.health_url == "http://127.0.0.1:8123/_sandbox/health"
    names = [s.name for s in services(settings)]
    assert names.index("housecallpro-sandbox") < names.index("api")  # healthy before the API starts
    remote = Settings(HOUSECALLPRO_SANDBOX_URL="https://hcp-sandbox.example.com")
    assert "housecallpro-sandbox" not in [s.name for s in services(remote)]
    assert Settings().housecallpro_sandbox_url == "http://127.0.0.1:8101"
