"""Asset checks on `referral_deliveries`: the things an operator must hear about."""

import dagster as dg

from integration_core.delivery.monitoring import expired_leases, failure_rates, oldest_due_pending_age
from integration_core.operations.health import check_providers, connection_verdict
from pipelines.assets import referral_deliveries
from pipelines.resources import IntegrationResource

LEASE_GRACE_SECONDS = 120.0


@dg.asset_check(
    asset=referral_deliveries,
    description="No lease expired and left unreconciled (reconcile is running and keeping up).",
)
def no_expired_leases(integration: IntegrationResource) -> dg.AssetCheckResult:
    with integration.session() as session:
        n = expired_leases(session, grace_seconds=LEASE_GRACE_SECONDS)
    return dg.AssetCheckResult(passed=n == 0, metadata={"expired_unreconciled": n})


@dg.asset_check(
    asset=referral_deliveries,
    description="Per company, failed / finished routings over 24 h is below FAILURE_RATE_THRESHOLD.",
)
def failure_rate_under_threshold(integration: IntegrationResource) -> dg.AssetCheckResult:
    threshold = integration.settings().failure_rate_threshold
    with integration.session() as session:
        rates = failure_rates(session)
    bad = [r for r in rates if r.rate > threshold]
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "threshold": threshold,
            "companies_over": len(bad),
            "worst": dg.MetadataValue.md(
                "\n".join(f"- {r.name} ({r.company_id}): {r.failed}/{r.finished}" for r in bad[:20]) or "none"
            ),
        },
    )


@dg.asset_check(
    asset=referral_deliveries, description="The oldest due pending routing is younger than DELIVERY_TARGET_SECONDS."
)
def oldest_pending_within_target(integration: IntegrationResource) -> dg.AssetCheckResult:
    target = integration.settings().delivery_target_seconds
    with integration.session() as session:
        age = oldest_due_pending_age(session)
    return dg.AssetCheckResult(
        passed=age is None or age <= target,
        metadata={"oldest_due_pending_age_s": round(age, 1) if age is not None else 0.0, "target_s": target},
    )


@dg.asset_check(
    asset=referral_deliveries,
    description="Every enabled provider connection proves its credentials (a token and one cheap read, through the "
    "tenant's rate budget, at most once per HEALTH_CACHE_SECONDS). Keeps the stored health that the public "
    "`GET /api/health/component/providers` reads current, so a connection nobody asked about is not `unknown`.",
)
def provider_connections_healthy(integration: IntegrationResource) -> dg.AssetCheckResult:
    engine = integration.engine()
    try:
        report = check_providers(engine, integration.settings())  # what the detailed health view runs
    finally:
        engine.dispose()
    verdicts = [(c, connection_verdict(c)) for c in report.connections or []]
    unhealthy = [c for c, v in verdicts if v == "unhealthy"]
    return dg.AssetCheckResult(
        passed=report.status == "up",  # every enabled connection healthy (or none)
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "enabled_connections": len(verdicts),
            "healthy": sum(1 for _, v in verdicts if v == "healthy"),
            "unhealthy": len(unhealthy),
            "unanswered": sum(1 for _, v in verdicts if v == "degraded"),  # throttled or unreachable this time
            "error": report.error or "none",  # the database could not be read
            # connection and company ids and the provider's redacted error codes only: no secret, no homeowner data
            "unhealthy_connections": dg.MetadataValue.md(
                "\n".join(
                    f"- {c.connection_id} (company {c.company_id}): {c.error_code or 'rejected'}"
                    for c in unhealthy[:20]
                )
                or "none"
            ),
        },
    )


delivery_checks = [
    no_expired_leases,
    failure_rate_under_threshold,
    oldest_pending_within_target,
    provider_connections_healthy,
]

checks_job = dg.define_asset_job(
    "delivery_checks_job",
    selection=dg.AssetSelection.checks(*delivery_checks),
    executor_def=dg.in_process_executor,
)
