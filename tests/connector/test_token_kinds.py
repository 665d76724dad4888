"""A secret sent to the wrong surface is told what it is (docs/admin.md, docs/scim.md,
docs/billing.md name the three kinds): a tenant's SCIM token to the admin API answered
only "The API token is not valid (revoked, or never issued)."."""

from __future__ import annotations

from billing import reporting
from connector import admins, tenants, token_kinds
from tests.support.clients import ApiClient, ScimClient


def test_the_prefixes_are_the_ones_tokens_are_issued_with() -> None:
    assert [prefix for prefix, _ in token_kinds.KINDS] == [
        tenants.TOKEN_PREFIX, admins.TOKEN_PREFIX, reporting.KEY_PREFIX]


def test_each_surface_says_what_a_token_of_another_is(scim: ScimClient,
                                                      partner: ApiClient) -> None:
    client = scim.client
    answer = client.get("/api/v1/tenants", headers={"Authorization": f"Bearer {scim.token}"})
    assert answer.status_code == 401
    assert answer.json["detail"] == ("The API token is not valid (revoked, or never issued). "
                                     "This is a tenant's SCIM token, which works under "
                                     "/scim/v2.")
    answer = client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {partner.token}"})
    assert answer.status_code == 401
    assert answer.json["detail"].endswith(
        "This is a personal API token, which works under /api/v1.")
    answer = client.get("/reporting/v1/months",
                        headers={"Authorization": f"Bearer {scim.token}"})
    assert answer.status_code == 401
    assert answer.json["detail"].endswith(
        "This is a tenant's SCIM token, which works under /scim/v2.")
    # A mistyped token of the right kind is only "not valid", as before.
    answer = client.get("/scim/v2/Users", headers={"Authorization": "Bearer scim_mistyped"})
    assert answer.json["detail"] == ("The bearer token is not valid for any tenant (revoked "
                                     "or mistyped).")
