"""Pure mapping and classification rules of the Housecall Pro provider (no I/O)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from integration_core.providers.base import (
    AuthFailed,
    DeliveryRequest,
    Permanent,
    RateLimited,
    Retryable,
    UnknownOutcome,
)
from integration_core.providers.housecallpro import mapping
from integration_core.providers.housecallpro.config import HousecallProConnection
from integration_core.providers.housecallpro.errors import backoff_after, classify_response, classify_transport_error
from integration_core.providers.housecallpro.models import Invoice

CONFIG = HousecallProConnection(company_id="cmp_1", api_key="hcp-secret-key-123", base_url="http://127.0.0.1:9")


def _request(**overrides: object) -> DeliveryRequest:
    values: dict[str, object] = {
        "routing_id": uuid.uuid4(),
        "summary": "Breaker trips when the dryer runs",
        "street": "12 Oak Lane",
        "city": "Beverly Hills",
        "state": "CA",
        "zip": "90210",
        "homeowner_name": "Maria de la Cruz",
        "homeowner_phone": "+1 (310) 555-0142",
        "homeowner_email": "maria@example.com",
        "created_at": datetime(2026, 1, 5, tzinfo=UTC),
        "referring_company_name": "Acme Plumbing",
        "category": "electrical",
    }
    values.update(overrides)
    return DeliveryRequest(**values)  # type: ignore[arg-type]


def test_marker_tag_round_trips_and_ignores_other_tags() -> None:
    rid = uuid.uuid4()
    tags = ["VIP", "tradeengage:not-a-uuid", mapping.marker_tag(rid)]
    assert mapping.marker_from_tags(tags) == rid
    assert mapping.has_marker(tags, str(rid))
    assert not mapping.has_marker(["VIP"], str(rid))
    assert mapping.marker_from_tags(["VIP"]) is None


def test_lead_and_job_bodies_carry_marker_lead_source_and_note() -> None:
    request = _request()
    lead = mapping.lead_body(request, CONFIG, customer_id="cus_1", address_id="adr_1").to_json()
    assert lead["tags"] == [f"tradeengage:{request.routing_id}"]
    assert lead["lead_source"] == "TradeEngage"
    assert str(request.routing_id) in lead["note"] and "Acme Plumbing" in lead["note"]
    job = mapping.job_body(request, CONFIG.model_copy(update={"job_type_id": "jt_1"}), customer_id="c", address_id="a")
    body = job.to_json()
    assert body["tags"] == lead["tags"] and body["job_fields"] == {"job_type_id": "jt_1"}
    assert "schedule" not in body  # the office books the visit


def test_customer_body_splits_name_and_stores_phone_digits() -> None:
    body = mapping.customer_body(_request(unit="Apt 2"), CONFIG).to_json()
    assert (body["first_name"], body["last_name"]) == ("Maria de la", "Cruz")
    assert body["mobile_number"] == "3105550142"
    assert body["addresses"] == [
        {
            "street": "12 Oak Lane",
            "street_line_2": "Apt 2",
            "city": "Beverly Hills",
            "state": "CA",
            "zip": "90210",
            "country": "USA",
        }
    ]
    assert mapping.split_name("Cher") == ("Cher", None)


def test_same_address_compares_street_line2_and_zip5() -> None:
    request = _request(unit="Apt 2")
    assert mapping.same_address("12 oak lane", "apt 2", "90210-1234", request)
    assert not mapping.same_address("12 Oak Lane", None, "90210", request)
    assert not mapping.same_address("14 Oak Lane", "Apt 2", "90210", request)


@pytest.mark.parametrize(
    ("work_status", "ours"),
    [
        ("needs scheduling", "new"),
        ("scheduled", "scheduled"),
        ("in progress", "in_progress"),
        ("in_progress", "in_progress"),
        ("complete rated", "completed"),
        ("complete unrated", "completed"),
        ("user canceled", "canceled"),
        ("pro canceled", "canceled"),
        ("teleported", None),
    ],
)
def test_job_status(work_status: str, ours: str | None) -> None:
    assert mapping.job_status(work_status) == ours


def test_lead_status() -> None:
    assert [mapping.lead_status(s) for s in ("open", "won", "lost", "?")] == ["new", "converted", "dismissed", None]


def test_revenue_sums_cents_of_invoices_that_count() -> None:
    invoices = [
        Invoice(id="i1", status="paid", amount=12_345),
        Invoice(id="i2", status="open", amount=5_000),
        Invoice(id="i3", status="voided", amount=99_999),
        Invoice(id="i4", status="paid", amount=None),
    ]
    assert mapping.revenue_from_invoices(invoices) == Decimal("173.45")
    assert mapping.revenue_from_invoices([Invoice(id="v", status="canceled", amount=100)]) is None
    assert mapping.revenue_from_invoices([]) is None


# -- classification (answers built by hand: the wire is the one thing faked here) ---------------------------


def _response(status: int, *, json: object = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=json, headers=headers, request=httpx.Request("POST", "http://x/leads"))


def test_429_with_and_without_retry_after() -> None:
    named = classify_response(_response(429, headers={"Retry-After": "7"}), operation="create_lead", write=True)
    assert isinstance(named, RateLimited) and named.retry_after == 7.0 and named.code == "rate_limited"
    waits = [
        classify_response(_response(429), operation="create_lead", write=True, unexplained_429s=n) for n in (1, 2, 3)
    ]
    assert all(isinstance(w, RateLimited) for w in waits)
    assert [w.retry_after for w in waits if isinstance(w, RateLimited)] == [1.0, 2.0, 4.0]
    assert backoff_after(50) == 60.0


@pytest.mark.parametrize(
    ("status", "write", "cls"),
    [
        (401, True, AuthFailed),
        (403, False, AuthFailed),
        (500, False, Retryable),
        (503, True, UnknownOutcome),
        (408, True, UnknownOutcome),
        (400, True, Permanent),
        (404, False, Permanent),
        (422, True, Permanent),
    ],
)
def test_status_classes(status: int, write: bool, cls: type) -> None:
    error = classify_response(
        _response(status, json={"error": {"message": "maria@example.com at 12 Oak Lane is invalid"}}),
        operation="create_lead",
        write=write,
        sensitive=["12 Oak Lane"],
    )
    assert isinstance(error, cls)
    assert "maria@example.com" not in str(error) and "12 Oak Lane" not in str(error)


def test_field_errors_are_kept_redacted() -> None:
    error = classify_response(
        _response(422, json={"error": {"message": "invalid", "errors": {"mobile_number": ["3105550142 is taken"]}}}),
        operation="create_customer",
        write=True,
    )
    assert isinstance(error, Permanent)
    assert error.field_errors == {"mobile_number": ["[redacted] is taken"]}


def test_transport_errors() -> None:
    req = httpx.Request("POST", "http://x/jobs")
    assert isinstance(
        classify_transport_error(httpx.ConnectError("no", request=req), operation="o", write=True), Retryable
    )
    assert isinstance(
        classify_transport_error(httpx.ReadTimeout("slow", request=req), operation="o", write=True), UnknownOutcome
    )
    assert isinstance(
        classify_transport_error(httpx.ReadTimeout("slow", request=req), operation="o", write=False), Retryable
    )
    assert isinstance(
        classify_transport_error(httpx.RemoteProtocolError("drop", request=req), operation="o", write=True),
        UnknownOutcome,
    )


def test_dry_run_plan_renders_the_bodies_without_the_key() -> None:
    from integration_core.providers.housecallpro.provider import plan_delivery

    request = _request()
    for mode, record in (("lead", "create_lead"), ("job", "create_job")):
        config = CONFIG.model_copy(update={"delivery_mode": mode})
        plan = plan_delivery(config, request, lookup=True, now=datetime(2026, 1, 5, tzinfo=UTC))
        operations = [p.operation for p in plan.requests]
        assert operations[:2] == ["find_existing", "find_existing"] and operations[-1] == record
        assert plan.requests[-1].url == f"http://127.0.0.1:9/{mode}s"
        assert plan.requests[-1].body is not None
        assert plan.requests[-1].body["tags"] == [mapping.marker_tag(request.marker)]
        assert "hcp-secret-key-123" not in repr(plan)
        assert "{customer_id}" in plan.placeholders
        without = plan_delivery(config, request, lookup=False, now=datetime(2026, 1, 5, tzinfo=UTC))
        assert without.requests[0].operation == "find_customer"


def test_concurrent_429s_of_one_episode_do_not_escalate_the_backoff() -> None:
    """Requests already in flight when a 429 without Retry-After arrives belong to the same episode."""
    import asyncio

    from integration_core.providers.housecallpro.client import HousecallProClient

    async def throttled(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return httpx.Response(429, json={"error": {"message": "slow down"}})

    async def body() -> tuple[list[float], float]:
        async with HousecallProClient(CONFIG, transport=httpx.MockTransport(throttled)) as client:

            async def one() -> float:
                with pytest.raises(RateLimited) as exc:
                    await client.request("GET", "/leads", operation="list_leads")
                return exc.value.retry_after

            together = await asyncio.gather(one(), one(), one())
            after = await one()  # sent after the episode's 429s came back: the next step
        return list(together), after

    together, after = asyncio.run(body())
    assert together == [1.0, 1.0, 1.0] and after == 2.0
