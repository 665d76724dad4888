"""schemathesis against the live admin API over real HTTP: generated requests for every
operation of the served openapi.json (valid and invalid ones: the examples, coverage and
fuzzing phases), on a seeded tenant, so that requests get past 404 to their query and body
handling, and path parameters hit real users, groups and tokens as well as unknown ids.

No request may answer 500, and every response must be one the spec declares: status code,
content type, headers and body. Bounded (few examples, fixed seed, deterministic
generation): ~4,900 requests, 30 s of CPU on each database.

Known values are also offered for the provisioning log's entries, the reporting keys and
billing months, so those operations are fuzzed past their lookups too.

Harmless by construction: the caller's own API token is never revoked (a spare one is
offered instead, and the run checks at the end that it is still signed in), and
POST /me/password cannot succeed because the fuzzer never guesses the password;
everything else it creates, changes or purges is this test's data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from flask.testing import FlaskClient
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import CoveragePhaseData
from schemathesis.transport.requests import ManagedCookiesSession
from sqlalchemy import Engine, select

from billing import reporting
from connector import admins
from connector.api import PREFIX
from connector.db import make_sessionmaker
from connector.models import ProvisioningEntry
from tests.api.contract import seed_directory
from tests.support.app import LiveServer
from tests.support.clients import ScimClient, make_admin

# Path parameters and how often the fuzzer takes a known id rather than a generated one.
# A live server and hundreds of generated requests.
pytestmark = pytest.mark.slow

IDS = {"user_id": 0.7, "group_id": 0.7, "token_id": 0.5, "entry_id": 0.7, "key_id": 0.5,
       "month": 0.7}
CHECKS = {
    # What the contract promises: no server error, and only declared responses.
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "response_headers_conformance",
    # Undeclared methods answer 405 with the right Allow header.
    "unsupported_method", "allow_header_conformance", "missing_required_header",
}
# Left out: positive_data_acceptance (whether a module is in the catalogue or a user on the
# deleted-users list is state, not schema: such "valid" requests rightly get 400);
# negative_data_rejection (the API is lenient on purpose: flags also take yes/no/1/0, text
# is trimmed before its length is checked); ignored_auth (every request carries the valid
# bearer token, so mangled cookie or CSRF credentials are rightly ignored).


def fuzz_config(base_url: str, known: dict[str, Any]) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": 4,
        "base-url": base_url,
        "headers": {"Authorization": f"Bearer {known['token']}"},
        "generation": {"max-examples": 10, "deterministic": True, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in sorted(CHECKS)}},
        "phases": {"stateful": {"enabled": False}},
        "cache": {"enabled": False},
        "request-timeout": 10,
        # Known ids through schemathesis dictionaries (fuzzing phase), each with a
        # probability so that generated ids are tried too; every phase on the seeded
        # tenant, since an unknown one stops a request at 404 before its query or body is
        # read (test_openapi checks that 404).
        "dictionaries": {name: {"values": known[name]} for name in IDS},
        "parameters": {"path.tenant_id": known["tenant_id"],
                       **{f"path.{name}": {"dictionary": name, "probability": probability}
                          for name, probability in IDS.items()}},
    })


def seed(live: LiveServer, engine: Engine, client: FlaskClient) -> dict[str, Any]:
    """Seed the live server's tenant and a partner admin; return what the fuzzer is given."""
    seeded = seed_directory(ScimClient(client, live.token, live.tenant_id))
    admin_id, token = make_admin(engine, "fuzz@example.com")
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine)() as s:
        own = admins.list_tokens(s, admin_id)[0].id
        spare, _ = admins.create_token(s, admin_id, "spare", now)
        key, _ = reporting.create_key(s, "fuzzed", "test", now)
        entries = [str(n) for n in s.scalars(select(ProvisioningEntry.id).where(
            ProvisioningEntry.tenant_id == live.tenant_id))]
        s.commit()
        spare_id, key_id = spare.id, key.id
    # Months with the seeded activity, one before it and one far out: path parameters
    # the fuzzer would otherwise only ever make up (and get 400 or 404 for).
    months = [f"{now:%Y-%m}", f"{now.replace(day=1) - dt.timedelta(days=1):%Y-%m}", "9999-12"]
    return {"token": token, "own_token": own, "tenant_id": live.tenant_id,
            "user_id": [*seeded["users"], seeded["disabled"], seeded["deleted"]],
            "group_id": [seeded["group"]], "token_id": [spare_id], "entry_id": entries,
            "key_id": [key_id], "month": months}


@pytest.fixture
def api_schema(live_server: LiveServer, engine: Engine, client: FlaskClient,
               request: pytest.FixtureRequest) -> Iterator[Any]:
    # schemathesis 4.32 names each operation's subtest by rewriting the test node's
    # `_nodeid`, an attribute pytest 9.2 no longer has: give it one to rewrite.
    request.node._nodeid = request.node.nodeid  # type: ignore[attr-defined]
    known = seed(live_server, engine, client)
    base = live_server.url + PREFIX
    schema = schemathesis.openapi.from_url(base + "/openapi.json",
                                           config=fuzz_config(base, known))

    @schema.hook
    def map_path_parameters(context: Any, path_parameters: Any) -> Any:
        """Never the fuzzer's own token (it can learn its id from GET /me/tokens)."""
        if isinstance(path_parameters, dict) and (
                path_parameters.get("token_id") == known["own_token"]):
            return {**path_parameters, "token_id": known["token_id"][0]}
        return path_parameters

    made: dict[str, list[schemathesis.Case]] = {}

    @schema.hook
    def filter_case(context: Any, case: schemathesis.Case) -> bool:
        """Not a coverage case aimed at `tenant_id` that repeats a request the operation's
        coverage phase made already.

        The coverage phase varies one parameter at a time, and the configured tenant_id
        replaces each of its variations (five values of an incorrect type), so those
        cases were the operation's valid request again: five identical requests for
        each of 76 operations, 380 of the run's 5,236, checking nothing the first one
        did not. An unknown tenant's 404 is test_openapi's."""
        data = case.meta.phase.data if case.meta is not None else None
        if not isinstance(data, CoveragePhaseData):
            return True
        earlier = made.setdefault(case.operation.label, [])
        if (data.parameter_location == ParameterLocation.PATH
                and data.parameter == "tenant_id" and case in earlier):
            return False
        earlier.append(case)
        return True

    yield schema
    still = requests.get(base + "/me", headers={"Authorization": f"Bearer {known['token']}"},
                         timeout=10)
    assert still.status_code == 200, "the fuzzer lost its own credentials mid-run"


@pytest.fixture
def http() -> Iterator[ManagedCookiesSession]:
    """One session for the run's requests, as schemathesis makes for each one (redirects
    within the host, no cookies kept from one request to the next, no default headers),
    but without reading the environment for proxies and ~/.netrc on every request (5% of
    the run's profile: 828,000 reads of os.environ): the server is on loopback."""
    with ManagedCookiesSession() as session:
        session.trust_env = False
        session.headers.clear()
        yield session


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_the_api_keeps_its_contract(case: schemathesis.Case,
                                    http: ManagedCookiesSession) -> None:
    case.call_and_validate(session=http)
