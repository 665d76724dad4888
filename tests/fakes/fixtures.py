"""Pytest fixtures that start the fakes and stop them cleanly; see tests/fakes/__init__.py.

Register them where they are needed, either once for the whole suite in tests/conftest.py
(`pytest_plugins = ["tests.fakes.fixtures"]`) or by importing the fixtures into a
package's conftest.py (`from tests.fakes.fixtures import fake_entra, ...`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msal
import pytest
import requests

from tests.fakes.entra_token import FakeTokenEndpoint
from tests.fakes.graph import FakeGraph
from tests.fakes.tls import LoopbackTLS, create_loopback_tls

GRAPH_SCOPES = ("https://graph.microsoft.com/.default",)


@dataclass(frozen=True)
class FakeApp:
    """One tenant's app registration on the fakes, with what a client needs to reach them."""

    tenant_id: str
    client_id: str
    client_secret: str
    authority_host: str  # https://127.0.0.1:{port} of the token endpoint
    graph_base_url: str  # https://127.0.0.1:{port} of Graph

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def scopes(self) -> list[str]:
        return list(GRAPH_SCOPES)


@dataclass
class DeltaWalk:
    """One delta round as a client saw it: every page's body, in order."""

    pages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def items(self) -> list[dict[str, Any]]:
        return [item for page in self.pages for item in page["value"]]

    @property
    def delta_link(self) -> str:
        return str(self.pages[-1]["@odata.deltaLink"])


@dataclass
class GraphCaller:
    """Bare HTTP calls to the fake Graph with one app's token, for tests of the fakes."""

    session: requests.Session
    base_url: str
    token: str
    msal_app: msal.ConfidentialClientApplication | None = None

    def refresh_token(self) -> str:
        """A new token from the fake Entra (msal's cache runs on the real clock, so a token
        the fake clock expired would otherwise come back from it)."""
        assert self.msal_app is not None
        self.msal_app.remove_tokens_for_client()
        self.token = self.msal_app.acquire_token_for_client(list(GRAPH_SCOPES))["access_token"]
        return self.token

    def get(self, url: str, headers: dict[str, str] | None = None,
            **kwargs: Any) -> requests.Response:
        url = url if url.startswith("https://") else f"{self.base_url}{url}"
        kwargs.setdefault("timeout", 5)
        return self.session.get(url, headers={"Authorization": f"Bearer {self.token}",
                                              **(headers or {})}, **kwargs)

    def walk(self, url: str, headers: dict[str, str] | None = None,
             max_pages: int = 100_000) -> DeltaWalk:
        """Follow nextLinks verbatim to the deltaLink."""
        walk = DeltaWalk()
        for _ in range(max_pages):
            response = self.get(url, headers)
            response.raise_for_status()
            walk.pages.append(response.json())
            if "@odata.nextLink" not in walk.pages[-1]:
                return walk
            url = walk.pages[-1]["@odata.nextLink"]
        raise AssertionError(f"no deltaLink after {max_pages} pages")


@pytest.fixture(scope="session")
def fake_tls(tmp_path_factory: pytest.TempPathFactory) -> LoopbackTLS:
    """The throwaway CA and server certificate, generated once per test session."""
    return create_loopback_tls(tmp_path_factory.mktemp("fake-tls"))


@pytest.fixture
def fake_https_session(fake_tls: LoopbackTLS) -> Iterator[requests.Session]:
    """A requests.Session that trusts the fakes (pass it to msal as `http_client`)."""
    with fake_tls.session() as session:
        yield session


@pytest.fixture
def fake_entra(fake_tls: LoopbackTLS) -> Iterator[FakeTokenEndpoint]:
    with FakeTokenEndpoint(fake_tls) as endpoint:
        yield endpoint
    assert endpoint.errors == [], "the fake token endpoint crashed"


@pytest.fixture
def fake_graph(fake_tls: LoopbackTLS, fake_entra: FakeTokenEndpoint) -> Iterator[FakeGraph]:
    with FakeGraph(fake_tls, fake_entra) as graph:
        yield graph
    assert graph.errors == [], "the fake Graph crashed"


@pytest.fixture
def fake_app(fake_entra: FakeTokenEndpoint, fake_graph: FakeGraph) -> FakeApp:
    """A fresh tenant with an app holding a secret and both Graph roles."""
    app = FakeApp(str(uuid.uuid4()), str(uuid.uuid4()), f"secret-{uuid.uuid4().hex}",
                  fake_entra.url, fake_graph.url)
    fake_entra.add_app(app.tenant_id, app.client_id, secret=app.client_secret)
    return app


@pytest.fixture
def fake_graph_caller(fake_app: FakeApp, fake_https_session: requests.Session) -> GraphCaller:
    """Calls to the fake Graph as `fake_app`, with a token msal got from the fake Entra."""
    client = msal.ConfidentialClientApplication(
        fake_app.client_id, client_credential=fake_app.client_secret,
        authority=fake_app.authority, instance_discovery=False, http_client=fake_https_session)
    result = client.acquire_token_for_client(fake_app.scopes)
    return GraphCaller(fake_https_session, fake_app.graph_base_url, result["access_token"],
                       client)
