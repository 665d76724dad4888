"""The fakes of Entra ID and Graph (tests/fakes) for the tests of azure_sync."""

from tests.azure_sync.harness import sync  # noqa: F401
from tests.fakes.fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    fake_app,
    fake_entra,
    fake_graph,
    fake_graph_caller,
    fake_https_session,
    fake_tls,
)
