"""The ServiceTitan sandbox fixtures (shared with the provider tests until tests/support/ holds them)."""

from tests.providers.servicetitan.conftest import *  # noqa: F403
