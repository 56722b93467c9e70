"""The run queue's order (`delivery/scheduling.py`): the shortest expected delivery run first, a run queued long
enough above every new one, retries in front; and the request counts behind the estimate match what each provider
would send."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from integration_core.delivery.scheduling import (
    AGED_AFTER_SECONDS,
    AGED_PRIORITY,
    LONGEST_PRIORITY,
    RETRY_PRIORITY,
    SHORTEST_PRIORITY,
    expected_run_seconds,
    queued_priority,
    requests_per_delivery,
    run_priority,
)
from integration_core.providers import registry
from integration_core.providers.base import DeliveryPlan, DeliveryRequest
from integration_core.providers.housecallpro.config import HousecallProConnection
from integration_core.providers.housecallpro.provider import plan_delivery as hcp_plan
from integration_core.providers.servicetitan.config import ServiceTitanConnection
from integration_core.providers.servicetitan.provider import plan_delivery as st_plan

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def _request() -> DeliveryRequest:
    return DeliveryRequest(
        routing_id=uuid.uuid4(),
        summary="Water heater leaking",
        street="12 Oak Lane",
        city="Beverly Hills",
        state="CA",
        zip="90210",
        homeowner_name="Maria de la Cruz",
        homeowner_phone="+1 (310) 555-0142",
        homeowner_email="maria@example.com",
        created_at=NOW,
        referring_company_name="Acme Plumbing",
        category="plumbing",
    )


def _servicetitan(mode: str) -> ServiceTitanConnection:
    return ServiceTitanConnection(
        base_url="http://127.0.0.1:9",
        tenant_id="1001",
        client_id="cid.test",
        client_secret="cs1.secret",
        app_key="ak1.key",
        delivery_mode=mode,
        booking_provider_id=77,
        business_unit_id=1,
        job_type_id=2,
        campaign_id=3,
        external_data_guid=uuid.UUID("5a4c3e1d-7d2b-4e0f-9a51-7e2f0c1d9b10"),
    )


def _housecallpro(mode: str) -> HousecallProConnection:
    return HousecallProConnection(
        company_id="cmp_1", api_key="hcp-secret-key-123", base_url="http://127.0.0.1:9", delivery_mode=mode
    )


# provider -> (its connection for a mode, its plan): a provider added to the registry must be added here
PLANS: dict[str, tuple[Callable[[str], Any], Callable[..., DeliveryPlan]]] = {
    "servicetitan": (_servicetitan, st_plan),
    "housecallpro": (_housecallpro, hcp_plan),
}


def test_every_provider_and_mode_counts_the_requests_its_plan_sends() -> None:
    assert set(PLANS) == set(registry.names())
    for provider, (connection, plan) in PLANS.items():
        modes = registry.get(provider).model.REQUIRED_BY_MODE  # type: ignore[attr-defined]
        assert modes, provider
        for mode in modes:
            sent = plan(connection(mode), _request(), lookup=False, now=NOW).requests
            assert requests_per_delivery(provider, mode) == len(sent), (provider, mode, [r.operation for r in sent])


def test_an_unknown_provider_or_mode_counts_one_request() -> None:
    assert requests_per_delivery("fieldpulse", "job") == 1
    assert requests_per_delivery("servicetitan", "estimate") == 1


def test_the_expected_run_is_what_the_tenant_budget_allows() -> None:
    # ten bookings at 5 requests/s: 2 s; ten jobs (find the customer, create it, its location, the job): 8 s
    assert expected_run_seconds(due=10, provider="servicetitan", delivery_mode="booking", rate_per_second=5) == 2.0
    assert expected_run_seconds(due=10, provider="servicetitan", delivery_mode="job", rate_per_second=5) == 8.0
    assert expected_run_seconds(due=10, provider="housecallpro", delivery_mode="lead", rate_per_second=20) == 2.0


def test_a_shorter_expected_run_never_gets_a_lower_priority() -> None:
    seconds = [0, 0.5, 0.99, 1, 2, 2.99, 3, 6, 7, 8, 20, 40, 100, 254, 255, 1000, 1e9]
    priorities = [run_priority(s) for s in seconds]
    assert priorities == sorted(priorities, reverse=True)
    assert priorities[0] == SHORTEST_PRIORITY and priorities[-1] == LONGEST_PRIORITY
    assert run_priority(0.99) == 18 and run_priority(1) == 17 and run_priority(7) == 15 and run_priority(255) == 10
    # the bands are log2 ones: 2 s and 8 s apart, 2.0 and 2.5 s together (first come, first served between them)
    assert run_priority(2) > run_priority(8)
    assert run_priority(2.0) == run_priority(2.5)
    # every new run stays under an aged one, and that under a retry
    assert SHORTEST_PRIORITY < AGED_PRIORITY < RETRY_PRIORITY


@pytest.mark.parametrize(
    ("current", "retry", "queued_for", "expected"),
    [
        ("17", False, 1.0, None),  # new: left where the sensor put it
        ("12", False, AGED_AFTER_SECONDS, AGED_PRIORITY),  # waited long enough: above every new run
        ("10", True, 0.0, RETRY_PRIORITY),  # a retry goes to the front at once
        (None, True, 0.0, RETRY_PRIORITY),  # a re-execution from the UI (no priority tag)
        ("19", False, 600.0, None),  # already aged
        ("20", False, 600.0, None),  # a retry is never lowered to aged
        ("25", True, 0.0, None),  # nor an operator's own priority
        ("soon", False, AGED_AFTER_SECONDS + 1, AGED_PRIORITY),  # a tag that is not a number counts as 0
    ],
)
def test_a_queued_run_is_raised_never_lowered(current: str | None, retry: bool, queued_for: float, expected) -> None:
    assert queued_priority(current, retry=retry, queued_for_seconds=queued_for) == expected
