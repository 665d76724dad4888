"""The admin API's endpoints: everything the web UI does, for scripts.

Each write is one transaction: the change, its directory events and one audit line
commit together or not at all. A tenant admin's requests for another tenant answer 404,
exactly as for a tenant that does not exist.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, g, request, stream_with_context

from connector import admins, auth, browse, counters, db, tenants
from connector.admins import Principal
from connector.api import (
    OPENAPI_FILE,
    bp,
    expect,
    json_response,
    read_body,
)
from connector.commands import IndexedValue, UserFields
from connector.directory import Directory
from connector.errors import InvalidSetting, NotFound
from connector.events import WriteContext
from connector.models import AdminAccount, Group, Tenant, User
from connector.status import Source
from connector.tenant_settings import change_settings

SETTING_NAMES = {"statusSource": "status_source", "scimDefaultStatus": "scim_default_status",
                 "provisioningPaused": "provisioning_paused"}


def principal() -> Principal:
    return g.principal  # type: ignore[no-any-return]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def session() -> Any:
    return db.get_session()


def tenant_for(tenant_id: str, lock: bool = False) -> Tenant:
    principal().require_tenant(tenant_id)
    tenant = session().get(Tenant, tenant_id, with_for_update=lock or None)
    if tenant is None:
        raise NotFound(f"Tenant {tenant_id} not found.")
    return tenant


def write_context(tenant_id: str) -> WriteContext:
    return WriteContext(tenant_id, Source.ADMIN, principal().actor, g.request_id, now())


def directory(tenant: Tenant) -> Directory:
    return Directory(session(), tenant, write_context(tenant.id))


def page_args() -> tuple[int, int]:
    query = browse.user_query({k: request.args.get(k, "") for k in ("page", "per_page")})
    return query.page, query.per_page


def page_json(page: browse.Page, items: list[Any] | None = None) -> dict[str, Any]:
    return {"items": items if items is not None else page.items, "total": page.total,
            "page": page.page, "perPage": page.per_page, "pages": page.pages}


def scim_base_url() -> str:
    configured = current_app.config["SETTINGS"].server.public_base_url.rstrip("/")
    return (configured or request.url_root.rstrip("/")) + "/scim/v2"


def done(status: int = 200, body: Any = None) -> Response:
    session().commit()
    return json_response(body, status) if body is not None else Response(status=204)


# -- the contract ---------------------------------------------------------------------------


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(OPENAPI_FILE.read_bytes(), mimetype="application/json")


# -- the caller -------------------------------------------------------------------------------


def account_json(account: AdminAccount) -> dict[str, Any]:
    return {"id": account.id, "email": account.email, "role": account.role,
            "tenantId": account.tenant_id, "mustChangePassword": account.must_change_password,
            "created": account.created_at.isoformat(),
            "disabled": account.disabled_at.isoformat() if account.disabled_at else None}


@bp.get("/me")
def me() -> Response:
    account = session().get(AdminAccount, principal().admin_id)
    return json_response({**account_json(account), "via": principal().via,
                          "csrfToken": auth.csrf_token() if principal().via == "session"
                          else None})


@bp.post("/me/password")
def change_password() -> Response:
    body = read_body({"currentPassword", "newPassword"}, {"currentPassword", "newPassword"})
    current = expect(body, "currentPassword", str, "a string")
    new = expect(body, "newPassword", str, "a string")
    account = session().get(AdminAccount, principal().admin_id)
    admins.change_password(session(), account, current, new)
    auth.audit(principal(), "password.changed", account.tenant_id, account.email)
    session().commit()
    if principal().via == "session":  # this browser stays signed in under the new epoch
        from flask import session as cookie

        cookie["epoch"] = account.session_epoch
    return Response(status=204)


def token_json(token: Any) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "hint": token.hint + "…",
            "created": token.created_at.isoformat(),
            "lastUsed": token.last_used_at.isoformat() if token.last_used_at else None,
            "revoked": token.revoked_at.isoformat() if token.revoked_at else None}


@bp.get("/me/tokens")
def list_tokens() -> Response:
    return json_response({"items": [token_json(t) for t in
                                    admins.list_tokens(session(), principal().admin_id)]})


@bp.post("/me/tokens")
def create_token() -> Response:
    body = read_body({"name"}, {"name"})
    name = expect(body, "name", str, "a string")
    token, clear = admins.create_token(session(), principal().admin_id, name, now())
    auth.audit(principal(), "token.created", principal().tenant_id, token.name,
               {"token_id": token.id})
    return done(201, {**token_json(token), "token": clear})


@bp.delete("/me/tokens/<token_id>")
def revoke_token(token_id: str) -> Response:
    token = admins.revoke_token(session(), principal().admin_id, token_id, now())
    auth.audit(principal(), "token.revoked", principal().tenant_id, token.name,
               {"token_id": token.id})
    return done()


# -- admin accounts (partner) -------------------------------------------------------------


@bp.get("/admins")
def list_admins() -> Response:
    principal().require_partner()
    return json_response({"items": [account_json(a) for a in admins.list_admins(session())]})


@bp.post("/admins")
def create_admin() -> Response:
    principal().require_partner()
    body = read_body({"email", "role", "tenantId"}, {"email", "role"})
    email = expect(body, "email", str, "a string")
    role = expect(body, "role", str, "'partner' or 'tenant'")
    tenant_id = expect(body, "tenantId", (str, type(None)), "a tenant id")
    account, one_time = admins.create_admin(session(), email, role, tenant_id, now())
    auth.audit(principal(), "admin.created", account.tenant_id, account.email,
               {"role": role})
    return done(201, {**account_json(account), "oneTimePassword": one_time})


# -- tenants -----------------------------------------------------------------------------------


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "created": tenant.created_at.isoformat(),
            "timeZone": tenant.time_zone, "scimBaseUrl": scim_base_url(),
            "users": counters.live_users(session(), tenant.id),
            "settings": settings_json(tenant)}


def settings_json(tenant: Tenant) -> dict[str, Any]:
    return {camel: getattr(tenant, snake) for camel, snake in SETTING_NAMES.items()}


@bp.get("/tenants")
def list_tenants() -> Response:
    rows = tenants.list_tenants(session())
    visible = [t for t in rows if principal().can_see(t.id)]
    return json_response({"items": [tenant_json(t) for t in visible]})


@bp.post("/tenants")
def create_tenant() -> Response:
    principal().require_partner()
    body = read_body({"name"}, {"name"})
    name = (expect(body, "name", str, "a string") or "").strip()
    if not 1 <= len(name) <= 200:
        raise InvalidSetting("A tenant name needs 1 to 200 characters.")
    tenant, issued = tenants.create_tenant(session(), name, now(), principal().actor)
    auth.audit(principal(), "tenant.created", tenant.id, name)
    session().flush()
    return done(201, {**tenant_json(tenant), "scimToken": issued.token})


@bp.get("/tenants/<tenant_id>")
def get_tenant(tenant_id: str) -> Response:
    return json_response(tenant_json(tenant_for(tenant_id)))


@bp.get("/tenants/<tenant_id>/settings")
def get_settings(tenant_id: str) -> Response:
    return json_response(settings_json(tenant_for(tenant_id)))


@bp.patch("/tenants/<tenant_id>/settings")
def patch_settings(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    body = read_body(set(SETTING_NAMES))
    changes = {SETTING_NAMES[k]: v for k, v in body.items()}
    changed = change_settings(session(), tenant_id, write_context(tenant_id), **changes)
    if changed:
        auth.audit(principal(), "tenant.settings", tenant_id, None,
                   {k: list(v) for k, v in changed.items()})
    tenant = session().get(Tenant, tenant_id)
    return done(200, settings_json(tenant))


@bp.post("/tenants/<tenant_id>/scim-token")
def rotate_scim_token(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    issued = tenants.rotate_token(session(), tenant_id, now(), principal().actor)
    auth.audit(principal(), "tenant.scim_token_rotated", tenant_id)
    return done(201, {"scimBaseUrl": scim_base_url(), "scimToken": issued.token})


# -- users ------------------------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/users")
def list_users(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    query = browse.user_query(request.args.to_dict())
    page = browse.list_users(session(), tenant_id, query)
    return json_response({**page_json(page, [u.as_json() for u in page.items]),
                          "capped": page.capped})


CREATE_USER = {"userName", "displayName", "givenName", "familyName", "email", "active",
               "guest", "admin", "modules"}


@bp.post("/tenants/<tenant_id>/users")
def create_user(tenant_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    body = read_body(CREATE_USER, {"userName"})
    user_name = (expect(body, "userName", str, "a string") or "").strip()
    if not 1 <= len(user_name) <= 512:
        raise InvalidSetting("userName needs 1 to 512 characters.")
    data: dict[str, Any] = {}
    names = {key: value.strip() for key in ("givenName", "familyName")
             if (value := expect(body, key, (str, type(None)), "a string"))}
    if names:
        data["name"] = names
    values: tuple[IndexedValue, ...] = ()
    email = expect(body, "email", (str, type(None)), "a string")
    if email:
        if "@" not in email or len(email) > 320:
            raise InvalidSetting(f"{email!r} is not an e-mail address.")
        data["emails"] = [{"value": email.strip(), "type": "work", "primary": True}]
        values = (IndexedValue("emails", 0, email.strip(), "work", True),)
    display = (expect(body, "displayName", (str, type(None)), "a string") or "").strip()
    if len(display) > 512:  # the column's size (PostgreSQL refuses longer text)
        raise InvalidSetting("displayName may have at most 512 characters.")
    modules = expect(body, "modules", list, "a list of module names")
    if modules is not None and not all(isinstance(m, str) for m in modules):
        raise InvalidSetting("modules must be a list of module names.")
    fields = UserFields(
        user_name=user_name, display_name=display or None, data=data,
        values=values, active=expect(body, "active", bool, "true or false"),
        guest=bool(expect(body, "guest", bool, "true or false")),
        admin=bool(expect(body, "admin", bool, "true or false")),
        modules=tuple(modules) if modules is not None else None)
    user = directory(tenant).create_user(fields)
    auth.audit(principal(), "user.created", tenant_id, user.id, {"userName": user_name})
    session().flush()
    return done(201, browse.user_detail(session(), tenant_id, user.id))


def live_user(tenant_id: str, user_id: str, lock: bool = True) -> User:
    user = session().get(User, (tenant_id, user_id), with_for_update=lock or None)
    if user is None or user.removed_at is not None:
        raise NotFound(f"User {user_id} not found in this tenant.")
    return user


@bp.get("/tenants/<tenant_id>/users/<user_id>")
def get_user(tenant_id: str, user_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(browse.user_detail(session(), tenant_id, user_id))


@bp.patch("/tenants/<tenant_id>/users/<user_id>")
def patch_user(tenant_id: str, user_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    body = read_body({"guest", "admin", "modules"})
    guest = expect(body, "guest", bool, "true or false")
    admin = expect(body, "admin", bool, "true or false")
    modules = expect(body, "modules", list, "a list of module names")
    if modules is not None and not all(isinstance(m, str) for m in modules):
        raise InvalidSetting("modules must be a list of module names.")
    user = live_user(tenant_id, user_id)
    d = directory(tenant)
    changed = d.set_user_flags(user, guest=guest, admin=admin)
    if modules is not None:
        changed = d.set_user_modules(user, modules) or changed
    if changed:
        auth.audit(principal(), "user.changed", tenant_id, user_id, body)
    session().flush()
    return done(200, browse.user_detail(session(), tenant_id, user_id))


@bp.put("/tenants/<tenant_id>/users/<user_id>/status")
def set_status(tenant_id: str, user_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    body = read_body({"status"}, {"status"})
    status = expect(body, "status", str, "'active' or 'inactive'")
    if status not in ("active", "inactive"):
        raise InvalidSetting(f"status must be 'active' or 'inactive'; got {status!r}.")
    user = live_user(tenant_id, user_id)
    if directory(tenant).admin_set_status(user, status == "active"):
        auth.audit(principal(), "user.status", tenant_id, user_id, {"status": status})
    session().flush()
    return done(200, browse.user_detail(session(), tenant_id, user_id))


@bp.get("/tenants/<tenant_id>/users/<user_id>/history")
def user_history(tenant_id: str, user_id: str) -> Response:
    tenant_for(tenant_id)
    browse.get_user(session(), tenant_id, user_id, include_removed=True)  # 404 if unknown
    return json_response({"items": browse.user_history(session(), tenant_id, user_id)})


# -- deleted users ----------------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/deleted-users")
def deleted_users(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    page = browse.deleted_users(session(), tenant_id, *page_args())
    return json_response(page_json(page, [u.as_json() for u in page.items]))


def listed_user(tenant_id: str, user_id: str) -> User:
    user = session().get(User, (tenant_id, user_id), with_for_update=True)
    if user is None or user.purged_at is not None:
        raise NotFound(f"User {user_id} is not on this tenant's deleted-users list.")
    return user


@bp.post("/tenants/<tenant_id>/deleted-users/<user_id>/restore")
def restore_user(tenant_id: str, user_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    directory(tenant).restore_user(listed_user(tenant_id, user_id))
    auth.audit(principal(), "user.restored", tenant_id, user_id)
    session().flush()
    return done(200, browse.user_detail(session(), tenant_id, user_id))


@bp.delete("/tenants/<tenant_id>/deleted-users/<user_id>")
def purge_user(tenant_id: str, user_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    directory(tenant).purge_user(listed_user(tenant_id, user_id))
    auth.audit(principal(), "user.purged", tenant_id, user_id)
    return done()


# -- groups and modules -----------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/groups")
def list_groups(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    q = request.args.get("q", "").strip()[:200]
    page = browse.list_groups(session(), tenant_id, q, *page_args())
    return json_response(page_json(page))


@bp.get("/tenants/<tenant_id>/groups/<group_id>")
def get_group(tenant_id: str, group_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(browse.get_group(session(), tenant_id, group_id))


@bp.get("/tenants/<tenant_id>/groups/<group_id>/members")
def group_members(tenant_id: str, group_id: str) -> Response:
    tenant_for(tenant_id)
    browse.get_group(session(), tenant_id, group_id)  # 404 if unknown
    return json_response(page_json(browse.group_members(session(), tenant_id, group_id,
                                                        *page_args())))


@bp.put("/tenants/<tenant_id>/groups/<group_id>/modules")
def set_group_modules(tenant_id: str, group_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    body = read_body({"modules"}, {"modules"})
    modules = expect(body, "modules", list, "a list of module names")
    if not all(isinstance(m, str) for m in modules):
        raise InvalidSetting("modules must be a list of module names.")
    group = session().get(Group, (tenant_id, group_id), with_for_update=True)
    if group is None:
        raise NotFound(f"Group {group_id} not found in this tenant.")
    if directory(tenant).set_group_modules(group, modules):
        auth.audit(principal(), "group.modules", tenant_id, group_id, {"modules": modules})
    session().flush()
    return done(200, browse.get_group(session(), tenant_id, group_id))


@bp.get("/tenants/<tenant_id>/modules")
def list_modules(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response({"items": browse.module_usage(session(), tenant_id)})


@bp.post("/tenants/<tenant_id>/modules")
def add_module(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    body = read_body({"name"}, {"name"})
    name = expect(body, "name", str, "a string")
    module = tenants.add_module(session(), write_context(tenant_id), name)
    auth.audit(principal(), "module.added", tenant_id, module)
    return done(201, {"name": module, "users": 0, "groups": 0})


# -- audit and export -------------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/audit")
def tenant_audit(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(page_json(browse.audit_entries(session(), tenant_id, *page_args())))


@bp.get("/audit")
def audit_log() -> Response:
    principal().require_partner()
    return json_response(page_json(browse.audit_entries(session(), None, *page_args())))


CSV_HEADER = ("first name", "last name", "e-mail", "username", "status", "modules", "guest",
              "admin")


def csv_rows(summaries: Iterator[browse.ExportRow]) -> Iterator[str]:
    """CSV text in chunks of a few hundred rows (one write per row would be slow)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for index, u in enumerate(summaries, 1):
        writer.writerow([_cell(u.given_name), _cell(u.family_name), _cell(u.email),
                         _cell(u.user_name), "active" if u.active else "inactive",
                         ";".join(u.modules), str(u.guest).lower(), str(u.admin).lower()])
        if index % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _cell(value: str | None) -> str:
    """Neutralise spreadsheet formulas (CSV injection): a cell starting with = + - @ or
    a control character is prefixed with an apostrophe, as OWASP recommends."""
    if not value:
        return ""
    return "'" + value if value[0] in "=+-@\t\r" else value


@bp.get("/tenants/<tenant_id>/exports/users.csv")
def export_users(tenant_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    auth.audit(principal(), "users.exported", tenant_id)
    session().commit()
    maker = current_app.extensions["sessionmaker"]
    stamp = now().strftime("%Y%m%d-%H%M")
    filename = f"users-{_slug(tenant.name)}-{stamp}.csv"

    def generate() -> Iterator[str]:
        with maker() as export_session:  # outlives the request's own session
            yield from csv_rows(browse.export_users(export_session, tenant_id))

    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40] or "tenant"
