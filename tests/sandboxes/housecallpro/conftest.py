"""Fixtures of the Housecall Pro sandbox tests (defined in tests/support/housecallpro.py)."""

from tests.support.housecallpro import hcp, hcp_account, hcp_sandbox_url  # noqa: F401
