"""The provisioning log page of a tenant ("Provisioning log" tab): filters, paging and
one entry's detail. Read-only; the API serves the same (connector/api/routes.py)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response

from connector import browse, db, provlog
from connector.errors import InvalidSetting
from connector.web import bp
from connector.web.pages import (
    TenantTab,
    add_tenant_tab,
    page_number,
    tenant_page,
)

PER_PAGE = 50
OPERATION_LABELS = {
    "create": "create", "update": "update", "disable": "disable", "enable": "enable",
    "delete": "delete", "restore": "restore", "membership_add": "added to a group",
    "membership_remove": "removed from a group", "adopt": "adopt (matched an existing "
    "account)", "skip": "skip", "request": "request (failed SCIM request)",
}


@bp.record_once
def _add_tab(state: BlueprintSetupState) -> None:
    add_tenant_tab(state.app, TenantTab("Provisioning log", "web.provlog", "web.provlog"))


@bp.get("/tenants/<tenant_id>/provisioning-log", endpoint="provlog")
def provlog_page(tenant_id: str) -> str | Response:
    tenant_page(tenant_id)
    try:
        log_filter = provlog.parse_filter(request.args)
    except InvalidSetting as exc:  # a filter typed into the URL: say which, show them all
        flash(exc.message, "error")
        return redirect(url_for("web.provlog", tenant_id=tenant_id), 303)
    page = page_number()
    rows, total = provlog.search(db.get_session(), tenant_id, log_filter, page, PER_PAGE)
    return render_template(
        "admin/provlog.html", entries=rows, filter=log_filter, args=request.args,
        page=browse.Page(rows, total, page, PER_PAGE), sources=provlog.SOURCES,
        results=provlog.RESULTS, operations=OPERATION_LABELS)


@bp.get("/tenants/<tenant_id>/provisioning-log/<entry_id>")
def provlog_entry(tenant_id: str, entry_id: str) -> str:
    tenant_page(tenant_id)
    entry = provlog.get_entry(db.get_session(), tenant_id, entry_id)
    return render_template("admin/provlog_entry.html", entry=entry,
                           operations=OPERATION_LABELS)
