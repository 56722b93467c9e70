"""Referral → ServiceTitan bodies and ServiceTitan → our statuses: pure functions, checked against the definitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from integration_core.providers.base import DeliveryRequest
from integration_core.providers.servicetitan import mapping
from integration_core.providers.servicetitan.config import ConnectionConfig
from integration_core.providers.servicetitan.models import InvoiceResponse
from sandboxes.servicetitan.spec import get_definitions

ROUTING_ID = uuid.UUID("6d2794b6-9b94-493a-9188-c6cdcb181024")
GUID = uuid.UUID("235fc569-b4ce-4159-95a5-2389ebc03127")


def make_request(**overrides: Any) -> DeliveryRequest:
    values: dict[str, Any] = {
        "routing_id": ROUTING_ID,
        "summary": "Water heater leaking in the garage",
        "street": "1 Main St",
        "unit": "Apt 2",
        "city": "Austin",
        "state": "TX",
        "zip": "78701",
        "homeowner_name": "Jane Doe",
        "homeowner_phone": "(512) 555-0100",
        "homeowner_email": "jane@example.com",
        "category": "plumbing",
        "referring_company_name": "Acme Electric",
        "created_at": datetime(2026, 1, 2, 15, 0, tzinfo=UTC),
    }
    values.update(overrides)
    return DeliveryRequest(**values)


def make_config(**overrides: Any) -> ConnectionConfig:
    values: dict[str, Any] = {
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:1",
        "tenant_id": "1001",
        "client_id": "cid.test",
        "client_secret": "cs1.secret",
        "app_key": "ak1.key",
        "delivery_mode": "booking",
        "booking_provider_id": 77,
    }
    values.update(overrides)
    return ConnectionConfig(**values)


def body_errors(module: str, method: str, template: str, body: dict[str, Any]) -> dict[str, list[str]]:
    return get_definitions().body_errors(module, method, template, body)


BOOKINGS = "/crm/v2/tenant/{tenant}/booking-provider/{booking_provider}/bookings"


# -- bookings ----------------------------------------------------------------------------------------------------


def test_booking_body_carries_the_marker_and_the_homeowner() -> None:
    body = mapping.booking_body(make_request(), make_config()).to_json()

    assert body["externalId"] == str(ROUTING_ID)
    assert body["source"] == mapping.BOOKING_SOURCE
    assert body["name"] == "Jane Doe"
    assert body["isFirstTimeClient"] is True
    assert body["customerType"] == "Residential"
    assert body["priority"] == "Normal"
    assert body["address"] == {
        "street": "1 Main St",
        "unit": "Apt 2",
        "city": "Austin",
        "state": "TX",
        "zip": "78701",
        "country": "USA",
    }
    assert body["contacts"] == [
        {"type": "MobilePhone", "value": "(512) 555-0100"},
        {"type": "Email", "value": "jane@example.com"},
    ]
    assert body["summary"].startswith("Water heater leaking in the garage")
    assert "Acme Electric" in body["summary"] and "plumbing" in body["summary"]
    assert str(ROUTING_ID) in body["summary"]
    # unset optional ids are omitted, not sent as null
    assert "businessUnitId" not in body and "jobTypeId" not in body and "campaignId" not in body
    assert body_errors("crm", "post", BOOKINGS, body) == {}


def test_booking_body_with_ids_and_without_contacts_or_unit() -> None:
    request = make_request(homeowner_phone=None, homeowner_email=" ", unit=None, referring_company_name=None)
    config = make_config(business_unit_id=10, job_type_id=20, campaign_id=30, priority="High")
    body = mapping.booking_body(request, config).to_json()

    assert "contacts" not in body
    assert "unit" not in body["address"]
    assert (body["businessUnitId"], body["jobTypeId"], body["campaignId"], body["priority"]) == (10, 20, 30, "High")
    assert "Referred via TradeEngage (category: plumbing)." in body["summary"]
    assert body_errors("crm", "post", BOOKINGS, body) == {}


def test_booking_without_external_id_is_what_servicetitan_rejects() -> None:
    """The check above is meaningful: the definitions do reject a booking missing its marker."""
    body = mapping.booking_body(make_request(), make_config()).to_json()
    del body["externalId"]
    assert "ExternalId" in body_errors("crm", "post", BOOKINGS, body)


# -- customers, locations, jobs ----------------------------------------------------------------------------------


def test_customer_body_has_the_service_address_as_its_location() -> None:
    body = mapping.customer_body(make_request()).to_json()

    assert body["name"] == "Jane Doe"
    assert body["type"] == "Residential"
    assert body["address"]["street"] == "1 Main St"
    assert len(body["locations"]) == 1
    assert body["locations"][0]["address"] == body["address"]
    assert [c["type"] for c in body["contacts"]] == ["MobilePhone", "Email"]
    assert body_errors("crm", "post", "/crm/v2/tenant/{tenant}/customers", body) == {}


def test_location_body() -> None:
    body = mapping.location_body(make_request(), customer_id=5001).to_json()

    assert body["customerId"] == 5001
    assert body["address"]["zip"] == "78701"
    assert body_errors("crm", "post", "/crm/v2/tenant/{tenant}/locations", body) == {}


def test_job_body_carries_the_marker_in_external_data() -> None:
    config = make_config(
        delivery_mode="job", business_unit_id=10, job_type_id=20, campaign_id=30, external_data_guid=GUID
    )
    now = datetime(2026, 1, 2, 20, 0, tzinfo=UTC)  # a Friday
    body = mapping.job_body(make_request(), config, customer_id=5001, location_id=5002, now=now).to_json()

    assert body["externalData"] == {
        "applicationGuid": str(GUID),
        "externalData": [{"key": mapping.MARKER_KEY, "value": str(ROUTING_ID)}],
    }
    assert (body["customerId"], body["locationId"]) == (5001, 5002)
    assert (body["businessUnitId"], body["jobTypeId"], body["campaignId"]) == (10, 20, 30)
    assert body["priority"] == "Normal"
    assert body["appointments"] == [
        {
            "start": "2026-01-05T15:00:00Z",
            "end": "2026-01-05T17:00:00Z",
            "arrivalWindowStart": "2026-01-05T15:00:00Z",
            "arrivalWindowEnd": "2026-01-05T17:00:00Z",
        }
    ]
    assert "Water heater leaking" in body["summary"]
    assert body_errors("jpm", "post", "/jpm/v2/tenant/{tenant}/jobs", body) == {}


def test_job_body_needs_the_job_mode_settings() -> None:
    config = make_config(delivery_mode="job", business_unit_id=10, job_type_id=20, campaign_id=30)
    assert config.missing_settings() == {"external_data_guid": ["required for delivery_mode=job"]}
    with pytest.raises(ValueError, match="job mode needs"):
        mapping.job_body(make_request(), config, customer_id=1, location_id=2, now=datetime.now(UTC))


@pytest.mark.parametrize(
    ("now", "expected_day"),
    [
        (datetime(2026, 1, 5, 8, 0, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)),  # Monday → Tuesday
        (datetime(2026, 1, 5, 23, 59, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)),
        (datetime(2026, 1, 9, 10, 0, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC)),  # Friday → Monday
        (datetime(2026, 1, 10, 10, 0, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC)),  # Saturday → Monday
        (datetime(2026, 1, 11, 10, 0, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC)),  # Sunday → Monday
        # Friday 20:00 in Los Angeles is Saturday 04:00 UTC → Monday
        (datetime(2026, 1, 9, 20, 0, tzinfo=timezone(timedelta(hours=-8))), datetime(2026, 1, 12, tzinfo=UTC)),
    ],
)
def test_next_appointment_is_the_next_business_morning(now: datetime, expected_day: datetime) -> None:
    appointment = mapping.next_appointment(now)
    assert appointment.start == expected_day.replace(hour=15)
    assert appointment.end == appointment.start + timedelta(hours=2)
    assert (appointment.arrival_window_start, appointment.arrival_window_end) == (appointment.start, appointment.end)


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_next_appointment_is_always_a_future_weekday_slot(now: datetime) -> None:
    appointment = mapping.next_appointment(now)
    assert appointment.start > now
    assert appointment.start - now < timedelta(days=4)
    assert appointment.start.weekday() < 5
    assert appointment.start.tzinfo is not None and appointment.start.utcoffset() == timedelta(0)
    assert appointment.end - appointment.start == mapping.APPOINTMENT_LENGTH


# -- back: statuses and revenue ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "ours"),
    [("New", "new"), ("Accepted", "accepted"), ("Dismissed", "dismissed"), ("Converted", "converted")],
)
def test_booking_status(status: str, ours: str) -> None:
    assert mapping.booking_status(status) == ours


@pytest.mark.parametrize(
    ("status", "ours"),
    [
        ("Scheduled", "scheduled"),
        ("Dispatched", "dispatched"),
        ("InProgress", "in_progress"),
        ("Hold", "hold"),
        ("Completed", "completed"),
        ("Canceled", "canceled"),
        ("Cancelled", "canceled"),
    ],
)
def test_job_status(status: str, ours: str) -> None:
    assert mapping.job_status(status) == ours


def test_unknown_statuses_map_to_none() -> None:
    assert mapping.booking_status("Archived") is None
    assert mapping.job_status("Unused") is None


def _invoice(total: str | None, ident: int = 1) -> InvoiceResponse:
    return InvoiceResponse.model_validate({"id": ident, "total": total})


def test_revenue_is_the_sum_of_invoice_totals_to_the_cent() -> None:
    invoices = [_invoice("1200.50", 1), _invoice("-100.00", 2), _invoice("0.005", 3), _invoice(None, 4)]
    assert mapping.revenue_from_invoices(invoices) == Decimal("1100.51")


def test_revenue_unknown_without_invoice_totals() -> None:
    assert mapping.revenue_from_invoices([]) is None
    assert mapping.revenue_from_invoices([_invoice(None)]) is None


def test_an_invoice_total_that_is_not_a_number_is_rejected() -> None:
    with pytest.raises(ValidationError):
        _invoice("twelve")


# -- matching helpers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "digits"),
    [("(512) 555-0100", "5125550100"), ("+1 512.555.0100", "5125550100"), ("5125550100", "5125550100"), (None, "")],
)
def test_normalize_phone(raw: str | None, digits: str) -> None:
    assert mapping.normalize_phone(raw) == digits


def test_same_address_ignores_case_punctuation_and_zip4() -> None:
    request = make_request()
    assert mapping.same_address("1 main st.", "APT 2", "78701-1234", request)
    assert not mapping.same_address("2 Main St", "Apt 2", "78701", request)
    assert not mapping.same_address("1 Main St", None, "78701", request)


# -- DTO hygiene -------------------------------------------------------------------------------------------------


def test_request_and_config_reprs_hide_homeowner_data_and_secrets() -> None:
    request_repr = repr(make_request())
    for value in ("Jane", "555", "jane@example.com", "Main St", "Water heater"):
        assert value not in request_repr
    assert str(ROUTING_ID) in request_repr

    config = make_config()
    for text in (repr(config), str(config)):
        assert "cs1.secret" not in text and "ak1.key" not in text and "cid.test" not in text


def test_config_validation_errors_do_not_echo_input() -> None:
    with pytest.raises(ValidationError) as info:
        ConnectionConfig(
            environment="sandbox",
            tenant_id="not-a-number",
            client_id="cid.x",
            client_secret="cs1.topsecret",
            app_key="ak1.key",
        )
    assert "not-a-number" not in str(info.value)
    assert "topsecret" not in str(info.value)


def test_sandbox_config_needs_a_base_url() -> None:
    with pytest.raises(ValidationError, match="base_url"):
        make_config(base_url=None)
    production = make_config(environment="production", base_url=None)
    assert production.missing_settings() == {}
    assert make_config(booking_provider_id=None).missing_settings() == {
        "booking_provider_id": ["required for delivery_mode=booking"]
    }
