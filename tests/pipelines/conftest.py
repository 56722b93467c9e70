from tests.delivery.conftest import engine_settings, sandbox, sandbox_url, world  # noqa: F401
