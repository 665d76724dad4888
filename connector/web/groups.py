"""A tenant's groups: the list, a group's members, and the modules its members get."""

from __future__ import annotations

from flask import render_template, request, url_for
from werkzeug.wrappers import Response

from connector import browse, db
from connector.actions.groups import set_group_modules as set_modules
from connector.http import admin_call
from connector.web import bp
from connector.web.pages import catalogue, come_back_to, done, page_number, tenant_page

PER_PAGE = 50


@bp.get("/tenants/<tenant_id>/groups")
def groups(tenant_id: str) -> str:
    tenant_page(tenant_id)
    q = request.args.get("q", "").strip()[:200]
    page = browse.list_groups(db.get_session(), tenant_id, q, page_number(), PER_PAGE)
    return render_template("admin/groups.html", page=page, q=q)


@bp.get("/tenants/<tenant_id>/groups/<group_id>")
def group(tenant_id: str, group_id: str) -> str:
    tenant_page(tenant_id)
    s = db.get_session()
    found = browse.get_group(s, tenant_id, group_id)
    members = browse.group_members(s, tenant_id, group_id, page_number(), PER_PAGE)
    return render_template("admin/group.html", group=found, members=members,
                           catalogue=catalogue(tenant_id))


@bp.post("/tenants/<tenant_id>/groups/<group_id>/modules")
def set_group_modules(tenant_id: str, group_id: str) -> Response:
    tenant_page(tenant_id)
    back = url_for("web.group", tenant_id=tenant_id, group_id=group_id)
    come_back_to(back)
    group, changed = set_modules(admin_call(), tenant_id, group_id,
                                 request.form.getlist("modules"))
    if changed:
        return done(f"Modules of {group.display_name} saved: its members have them now.", back)
    return done("Nothing changed.", back)
