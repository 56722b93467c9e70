"""Code the tests share: builders, handles and checks (plain modules, imported by tests and conftests alike).

Conftest files hold fixtures only; anything a test imports lives here, one module per area:

- `config`   paths, the test token and key, settings builders, cache clearing
- `db`       the PostgreSQL server a session uses, alembic, table list
- `sandbox`  the ServiceTitan sandbox: `SandboxHandle` (the one handle type), `TenantCreds`, `TenantClient`,
             request payloads, `serve_sandbox` (the sandbox in its own process)
- `servicetitan`  connections, referrals and leak checks for the ServiceTitan client and provider tests
- `world`    `World` (a referring company with a technician), receivers connected to sandbox tenants, routings
- `delivery` running async engine code on its own event loop
- `api`, `dagster`, `operator`  the HTTP API over loopback, the Dagster webserver handle, operator builders
- `compose`, `waiting`  docker-compose.yml and CLI resolution, polling
- `fixtures_servicetitan`  a pytest plugin (registered in tests/conftest.py) with the ServiceTitan fixtures
"""
