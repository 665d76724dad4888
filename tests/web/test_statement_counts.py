"""Statement counts of the admin UI's lists: a page of 50 users, groups, deleted users or
audit lines costs the statements that a page of 5 does."""

from __future__ import annotations

import itertools
import re

from sqlalchemy import Engine

from tests.scim.factories import created, group, patch, user, users_in_a_group
from tests.support.clients import ScimClient, add_audit_lines, make_tenant
from tests.support.statements import assert_flat
from tests.web.conftest import WebSession

ROW = re.compile(r"<tr>\s*<(?:td|th scope=\"row\")")


def rows(html: str) -> int:
    """The table rows a list page shows (not its header, nor its 'nothing here' row)."""
    body = html[html.index("<tbody>"):html.index("</tbody>")]
    return len([r for r in ROW.finditer(body)]) - body.count("colspan=")


def test_users(partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/users?per_page=200"
    assert_flat(engine, lambda k: users_in_a_group(scim, k),
                lambda n: _expect(rows(partner_web.page(base)), n))


def test_groups(partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    members = [created(scim.post("/Users", user()))["id"] for _ in range(2)]

    def add(k: int) -> None:
        for _ in range(k):
            created(scim.post("/Groups", group(members=members)))

    base = f"/admin/tenants/{scim.tenant_id}/groups"
    assert_flat(engine, add, lambda n: _expect(rows(partner_web.page(base)), n))


def test_deleted_users(partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    def add(k: int) -> None:
        for i, uid in enumerate(users_in_a_group(scim, k)):
            if i % 2:  # disabled by the IdP: still present, on the list
                assert scim.patch(f"/Users/{uid}", patch(
                    {"op": "replace", "path": "active", "value": False})).status_code == 200
            else:
                assert scim.delete(f"/Users/{uid}").status_code == 204

    base = f"/admin/tenants/{scim.tenant_id}/deleted-users"
    assert_flat(engine, add, lambda n: _expect(rows(partner_web.page(base)), n))


def test_tenant_audit(partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/audit"
    assert_flat(engine, lambda k: add_audit_lines(engine, scim.tenant_id, None, k),
                lambda n: _expect(rows(partner_web.page(base)), n))


def test_audit(partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    """Every tenant's lines and the tenant-less ones, the partner's sign-in among them:
    the page shows 50 lines, so the sign-in counts towards each size."""
    have = [rows(partner_web.page("/admin/audit"))]

    def add(k: int) -> None:
        k -= have.pop() if have else 0
        add_audit_lines(engine, scim.tenant_id, None, k - k // 2)
        add_audit_lines(engine, None, None, k // 2)

    assert_flat(engine, add, lambda n: _expect(rows(partner_web.page("/admin/audit")), n))


def test_tenants(partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    """Each tenant's row shows its live-user count: read for all of them at once."""
    users_in_a_group(scim, 2)
    names = itertools.count(1)

    def add(k: int) -> None:
        for _ in range(k):
            make_tenant(engine, f"Tenant {next(names)}")

    # The `scim` fixture's tenant is listed too; one page holds them all.
    assert_flat(engine, add, lambda n: _expect(
        rows(partner_web.page("/admin/tenants?per_page=200")), n + 1))


def _expect(found: int, wanted: int) -> None:
    assert found == wanted, f"{found} rows listed, {wanted} expected"
