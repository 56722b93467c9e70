"""The demo world: companies, technicians and the sandbox accounts they connect to (ServiceTitan tenants,
Housecall Pro companies).

Both sandboxes (which seed these accounts) and `si seed demo` (which creates the matching companies and
connections) read this module, so they always agree.

ElectroFix is the Housecall Pro shop: it serves 90210 beside Sunset Plumbing and Bright Spark, so the guide's
90210 example reaches it when the job asks for a skill only it has (`lighting`, `generator`); a job without
skills still goes to Bright Spark Electric first (equal scores, then by name).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEMO_APP_KEY = "ak1.demo-tradeengage-referrals"
DEMO_EXTERNAL_DATA_GUID = "5a4c3e1d-7d2b-4e0f-9a51-7e2f0c1d9b10"


@dataclass(frozen=True)
class DemoTenant:
    tenant_id: str
    client_id: str
    client_secret: str
    booking_provider_id: int
    business_unit_id: int
    job_type_id: int
    campaign_id: int
    app_key: str = DEMO_APP_KEY
    external_data_guid: str = DEMO_EXTERNAL_DATA_GUID


def _tenant(n: int) -> DemoTenant:
    return DemoTenant(
        tenant_id=str(n),
        client_id=f"cid.demo{n}",
        client_secret=f"cs1.demo-secret-{n}",
        booking_provider_id=n * 100 + 1,
        business_unit_id=n * 100 + 10,
        job_type_id=n * 100 + 20,
        campaign_id=n * 100 + 30,
    )


# -- Housecall Pro ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoHcpAccount:
    """A Housecall Pro company the Housecall Pro sandbox seeds at start (its API key authenticates
    `Authorization: Token <api_key>`)."""

    company_id: str
    api_key: str
    name: str


DEMO_HCP_ACCOUNTS: tuple[DemoHcpAccount, ...] = (
    DemoHcpAccount(company_id="cmp_demo_electrofix", api_key="hcp-demo-electrofix-key", name="ElectroFix"),
)
"""The Housecall Pro sandbox seeds these accounts; `si seed demo` connects ElectroFix to the first."""


@dataclass(frozen=True)
class DemoCompany:
    key: str
    name: str
    trade: str
    zip_codes: tuple[str, ...]
    timezone: str
    skills: tuple[tuple[str, str, bool], ...]  # (skill, level, primary)
    technicians: tuple[tuple[str, str, str], ...]  # (name, phone, email)
    tenant: DemoTenant | None = None
    hcp_account: DemoHcpAccount | None = None  # a Housecall Pro connection instead of a ServiceTitan one
    delivery_mode: str = "booking"
    extra: dict[str, str] = field(default_factory=dict)


DEMO_TENANTS: tuple[DemoTenant, ...] = tuple(_tenant(n) for n in (1001, 1002, 1003, 1004, 1005))

DEMO_COMPANIES: tuple[DemoCompany, ...] = (
    DemoCompany(
        key="sunset-plumbing",
        name="Sunset Plumbing & Water Heaters",
        trade="plumbing",
        zip_codes=("90210", "90211", "90212", "90024", "90035"),
        timezone="America/Los_Angeles",
        skills=(
            ("plumbing", "expert", True),
            ("water_heater", "expert", False),
            ("drain_cleaning", "intermediate", False),
        ),
        technicians=(("Maria Lopez", "310-555-0101", "maria@sunset-plumbing.example"),),
        tenant=DEMO_TENANTS[0],
        delivery_mode="booking",
    ),
    DemoCompany(
        key="bright-spark",
        name="Bright Spark Electric",
        trade="electrical",
        zip_codes=("90210", "90069", "90046", "90048"),
        timezone="America/Los_Angeles",
        skills=(
            ("electrical", "expert", True),
            ("ev_charger", "intermediate", False),
            ("panel_upgrade", "expert", False),
        ),
        technicians=(("Dev Patel", "310-555-0102", "dev@brightspark.example"),),
        tenant=DEMO_TENANTS[1],
        delivery_mode="job",
    ),
    DemoCompany(
        key="cool-breeze",
        name="Cool Breeze HVAC",
        trade="hvac",
        zip_codes=("78701", "78702", "78703", "78704"),
        timezone="America/Chicago",
        skills=(
            ("hvac", "expert", True),
            ("air_conditioning", "expert", False),
            ("furnace", "intermediate", False),
        ),
        technicians=(("Sam Carter", "512-555-0103", "sam@coolbreeze.example"),),
        tenant=DEMO_TENANTS[2],
        delivery_mode="booking",
    ),
    DemoCompany(
        key="lone-star-roofing",
        name="Lone Star Roofing",
        trade="roofing",
        zip_codes=("78701", "78704", "78745"),
        timezone="America/Chicago",
        skills=(("roofing", "expert", True), ("gutters", "intermediate", False)),
        technicians=(("Ana Ruiz", "512-555-0104", "ana@lonestarroofing.example"),),
        tenant=DEMO_TENANTS[3],
        delivery_mode="job",
    ),
    DemoCompany(
        key="empire-pest",
        name="Empire Pest Control",
        trade="pest_control",
        zip_codes=("10001", "10002", "10003", "11201"),
        timezone="America/New_York",
        skills=(("pest_control", "expert", True), ("termite", "intermediate", False)),
        technicians=(("Chris Wong", "212-555-0105", "chris@empirepest.example"),),
        tenant=DEMO_TENANTS[4],
        delivery_mode="booking",
    ),
    DemoCompany(
        key="handy-neighbors",
        name="Handy Neighbors General Contracting",
        trade="general",
        zip_codes=("90210", "78701", "10001"),
        timezone="America/Los_Angeles",
        skills=(
            ("carpentry", "expert", True),
            ("drywall", "intermediate", False),
            ("plumbing", "basic", False),
        ),
        technicians=(("Jordan Blake", "310-555-0106", "jordan@handyneighbors.example"),),
        tenant=None,  # refers work; has no field-service connection (its routings wait in no_integration)
    ),
    DemoCompany(
        key="electrofix",
        name="ElectroFix",
        trade="electrical",
        zip_codes=("90210", "90211", "90069"),
        timezone="America/Los_Angeles",
        skills=(
            ("electrical", "intermediate", True),
            ("lighting", "expert", False),
            ("generator", "expert", False),
        ),
        technicians=(("Rosa Kim", "310-555-0107", "rosa@electrofix.example"),),
        hcp_account=DEMO_HCP_ACCOUNTS[0],
        delivery_mode="lead",
    ),
)
