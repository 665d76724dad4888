"""What every admin page uses, this package's and the ones other packages nest in the
web UI (Entra ID sync, billing): the tenant a page is about, where a form's refusal is
shown, the answer to a form, query arguments, and the tabs other packages add.

A form posts to an action URL, calls one admin action (`connector.actions`, or the
package's own) and answers with `done(message, url)`: the transaction commits and the
browser is redirected (303) to the page, which shows the message. A refusal the form can
fix comes back to the page named by `come_back_to`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import flash, g, redirect, request
from flask.sansio.app import App
from werkzeug.wrappers import Response

from connector import db, errors
from connector.admins import Principal
from connector.http import tenant_for
from connector.models import Tenant
from connector.tenants import module_catalogue
from connector.text import digits
from connector.web import PREFIX
from connector.web.forms import MAX_KEPT_CHARS, fitted, keep, shortened, typed

# Part of the page kit (connector.web.forms): a refused form's value, and keeping a form
# a page refuses itself (not through a domain error).
__all__ = ["MAX_KEPT_CHARS", "fitted", "keep", "shortened", "typed"]


def me() -> Principal:
    """The signed-in admin."""
    return g.principal


def tenant_page(tenant_id: str, lock: bool = False) -> Tenant:
    """The tenant a page is about (404 for one the admin may not see), for the layout's
    navigation and paused banner too; `lock` takes its row FOR UPDATE."""
    tenant = tenant_for(tenant_id, lock=lock)
    g.tenant, g.tenant_id = tenant, tenant.id
    return tenant


def come_back_to(url: str) -> None:
    """Where a form's refusal is shown: the page the form is on."""
    g.back = url


def done(message: str, url: str) -> Response:
    """Commit the request's transaction, say what happened, show the page again."""
    db.get_session().commit()
    flash(message, "success")
    return redirect(url, 303)


def safe_next(target: str | None) -> str | None:
    """A redirect target given by the client, if it stays inside the admin UI."""
    if (target and target.startswith(PREFIX + "/") and not target.startswith("//")
            and "\\" not in target and "://" not in target
            and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)):
        # Control characters (a CR LF smuggling a header into the Location) never pass.
        return target
    return None


def url_with(**changes: Any) -> str:
    """This page's URL with some query arguments changed (None drops one)."""
    args = {k: v for k, v in request.args.items() if k not in changes}
    args.update({k: v for k, v in changes.items() if v not in (None, "")})
    query = urlencode(args)
    return request.path + ("?" + query if query else "")


def catalogue(tenant_id: str) -> list[str]:
    """The tenant's module names, for filters and checkboxes."""
    return sorted(module_catalogue(db.get_session(), tenant_id).values(),
                  key=str.casefold)


def checked(name: str) -> bool:
    """Whether a form's checkbox was ticked."""
    return request.form.get(name) in ("on", "true", "1", "yes")


def page_number(name: str = "page") -> int:
    raw = request.args.get(name, "")
    if not raw:
        return 1
    if not digits(raw) or not 1 <= int(raw) <= 1_000_000:
        raise errors.InvalidSetting(f"{name} must be a whole number from 1; got {raw!r}.")
    return int(raw)


# -- what other packages add to the tenant pages ---------------------------------------------


@dataclass(frozen=True)
class TenantTab:
    """A tab a child blueprint adds to every tenant's navigation (Entra ID sync…).

    `banner` and `settings` are called with the tenant while a tenant page renders and
    return HTML (Markup) or None: a banner shown on every page of the tenant (as the
    paused one), and a card on the provisioning settings page. Keep them to a query or
    two by primary key: they run on every tenant page.
    """

    label: str
    endpoint: str  # the tab's page: url_for(endpoint, tenant_id=...)
    prefix: str  # the endpoints (by name prefix) on which the tab is the current one
    banner: Callable[[Tenant], Any] | None = None
    settings: Callable[[Tenant], Any] | None = None


def add_tenant_tab(app: App, tab: TenantTab) -> None:
    tabs: list[TenantTab] = app.extensions.setdefault("web_tenant_tabs", [])
    if all(t.endpoint != tab.endpoint for t in tabs):
        tabs.append(tab)
