"""scim2-tester (the public SCIM conformance checker) against a live server.

Anything it flags that we deliberately do not do must be listed in docs/scim.md with
the reason, and in ACCEPTED below with the same words; everything else must pass.
"""

from __future__ import annotations

import re

import pytest

from tests.support.app import LiveServer

# (check title, pattern its reason must match) -> why we differ on purpose. Keep in step
# with docs/scim.md, "What scim2-tester flags". A pattern names one attribute, so an
# accepted difference can never hide a new failure of the same check on another one.
ACCEPTED: dict[tuple[str, str], str] = {
    ("check_remove_attribute", r"^Failed to remove attribute 'active': 'active' cannot be removed"):
        "every user has a status; removing `active` is refused with 400 invalidValue",
    ("check_add_attribute",
     r"'urn:connector:params:scim:schemas:extension:2\.0:(User|Group):modules'"):
        "`add` to a multi-valued attribute appends (RFC 7644 §3.5.2.1); the tester adds "
        "the extension object first and then expects `modules` to hold only the second value",
}


def accepted(title: str, reason: str) -> bool:
    return any(title == t and re.search(pattern, reason) for t, pattern in ACCEPTED)


@pytest.mark.slow
def test_scim2_tester_reports_no_failure(live_server: LiveServer) -> None:
    # Imported here: building scim2-client's pydantic models takes seconds, which every
    # run that collects this file would pay, even one that leaves slow tests out.
    import httpx2
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import Status, check_server

    failing = {Status.ERROR, Status.CRITICAL} if hasattr(Status, "CRITICAL") else {Status.ERROR}
    http = httpx2.Client(base_url=f"{live_server.url}/scim/v2",
                         headers={"Authorization": f"Bearer {live_server.token}"}, timeout=30)
    with http:
        results = check_server(SyncSCIMClient(http))
    assert results, "scim2-tester ran no check"
    failures = [f"{r.resource_type or '-'} / {r.title}: {r.reason}" for r in results
                if r.status in failing and not accepted(r.title, r.reason or "")]
    assert not failures, "\n".join(failures)
