"""The suite's shared fixtures, one module per concern under tests/support/:

- `databases`: every storage-backed test runs on real SQLite and real PostgreSQL
  (`database_url`, `engine`, `session`, tables emptied after each test; `--db`);
- `app`: the web app on that database (`settings`, `app`, `client`, `live_server`);
- `clients`: SCIM and admin API clients with their tenant or account (`scim`,
  `other_scim`, `partner`, `tenant_admin`);
- `statements`: the statement counter that guards list endpoints against N+1 queries;
- `compiled`: URL builders and templates compiled once per process, not once per app.

Fixtures used by one area only live in that area's conftest.py (tests/web,
tests/azure_sync).
"""

import pytest
from hypothesis import HealthCheck, settings

# Property tests check what holds, not how fast examples are drawn: on a machine busy
# with other work, drawing them can pass hypothesis' time limits and fail a test that
# found nothing wrong.
settings.register_profile("connector", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("connector")

# Before the imports below: pytest rewrites the asserts of the support modules (plugins and
# helpers alike) only if it sees them first.
pytest.register_assert_rewrite("tests.support")

# tests/azure_sync and tests/billing import these from here; elsewhere tests import them
# from tests/support/ itself.
from tests.support.app import LiveServer  # noqa: F401
from tests.support.clients import (  # noqa: F401
    API,
    PASSWORD,
    SCIM,
    ApiClient,
    HttpVerbs,
    ScimClient,
    make_admin,
    make_tenant,
)
from tests.support.databases import PG_ADMIN_DSN, PG_URL_TEMPLATE  # noqa: F401

pytest_plugins = [
    "tests.support.databases",
    "tests.support.app",
    "tests.support.clients",
    "tests.support.compiled",
    "tests.support.webhooks",
]


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy from the environment: outbound sessions (Entra sync, webhooks) honour
    HTTPS_PROXY / NO_PROXY, which a test of the proxy settings must control."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
