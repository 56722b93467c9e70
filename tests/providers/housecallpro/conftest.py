"""Fixtures of the Housecall Pro provider tests: the sandbox in its own process (reset per test), accounts."""

from tests.support.housecallpro import hcp, hcp_account, hcp_sandbox_url  # noqa: F401
