"""WSGI entry point serving the public reference server `scim2-server` for the bench.

Loaded by gunicorn from the bench's separate virtualenv (never the connector's .venv):
`gunicorn -w 1 --pythonpath bench scim2_server_wsgi:app`, so that scim2-server runs under
the same server and worker model as the connector. It builds the same application as
the `scim2-server` command (RFC 7643 schemas, in-memory storage, one static bearer
token taken from SCIM2_BENCH_TOKEN); resources live under /v2.
"""

from __future__ import annotations

import os
import secrets

from scim2_models import ScimProvider
from scim2_server.memory import InMemoryStorage
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)

_config = load_default_service_provider_config()
_config.authentication_schemes = [*(_config.authentication_schemes or []), BEARER_TOKEN_SCHEME]
_provider = ScimProvider.from_discovery(
    load_default_schemas().values(), load_default_resource_types().values(), config=_config
)
_service = ScimService(_provider, secret=secrets.token_urlsafe(32))

app = BearerTokenApplication(
    InMemoryStorage(), _provider, service=_service,
    bearer_tokens=[os.environ["SCIM2_BENCH_TOKEN"]],
)
