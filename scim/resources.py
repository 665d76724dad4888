"""SCIM operations on Users and Groups, shared by the HTTP routes and /Bulk.

Each function takes the request's session and a `ScimContext`, translates SCIM into
directory calls, and returns rendered resources. Transactions are the caller's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from connector.commands import ExpectedVersion, MemberChange
from connector.directory import Directory
from connector.events import WriteContext
from connector.models import Group, Tenant, User
from scim import casting, store
from scim.errors import InvalidValue, NotFound
from scim.patch import apply_patch
from scim.projection import Projection
from scim.schemas import CONNECTOR_GROUP, CONNECTOR_USER, GROUP_TYPE, USER_TYPE


@dataclass(frozen=True)
class ScimContext:
    tenant: Tenant
    write: WriteContext
    base_url: str
    retry_after: int = 300

    def directory(self, session: Session) -> Directory:
        return Directory(session, self.tenant, self.write, self.retry_after)


# -- rendering -----------------------------------------------------------------------


def render_users(session: Session, ctx: ScimContext, users: Sequence[User],
                 projection: Projection | None = None) -> list[dict[str, Any]]:
    """Render ORM users (write paths); modules and groups come in one extra statement."""
    wants_groups = projection is None or projection.includes("groups")
    extras = store.user_extras(session, ctx.tenant.id, [u.id for u in users], wants_groups)
    return [render_user(ctx, user, *extras.get(user.id, (None, None)), projection)
            for user in users]


def render_user_rows(ctx: ScimContext, rows: Sequence[Any], projection: Projection | None = None
                     ) -> list[dict[str, Any]]:
    """Render rows that carry their own `modules_agg` and `groups_agg` (the read paths)."""
    return [render_user(ctx, row, row.modules_agg, row.groups_agg, projection) for row in rows]


def render_user(ctx: ScimContext, user: Any, modules_agg: str | None, groups_agg: str | None,
                projection: Projection | None) -> dict[str, Any]:
    resource = casting.render_user(
        _meta(ctx, user, "User", "Users"), _user_columns(user), user.data,
        store.decode_modules(modules_agg), store.decode_groups(groups_agg, ctx.base_url))
    return projection.apply(resource) if projection else resource


def render_groups(session: Session, ctx: ScimContext, groups: Sequence[Group],
                  projection: Projection | None = None) -> list[dict[str, Any]]:
    ids = [g.id for g in groups]
    modules = store.group_modules(session, ctx.tenant.id, ids)
    wants_members = projection is None or projection.includes("members")
    members = store.group_members(session, ctx.tenant.id, ids, ctx.base_url) \
        if wants_members else {}
    out = []
    for group in groups:
        resource = casting.render_group(
            _meta(ctx, group, "Group", "Groups"), _group_columns(group), group.data,
            modules.get(group.id), members.get(group.id, []) if wants_members else None)
        out.append(projection.apply(resource) if projection else resource)
    return out


def _meta(ctx: ScimContext, row: Any, kind: str, endpoint: str) -> casting.Meta:
    return casting.Meta(row.id, kind, row.created_at, row.modified_at, row.version,
                        f"{ctx.base_url}/{endpoint}/{row.id}")


def _user_columns(user: Any) -> dict[str, Any]:
    return {"user_name": user.user_name, "external_id": user.external_id,
            "display_name": user.display_name, "active": user.active, "guest": user.guest,
            "external_company_guest": user.external_company_guest, "admin": user.admin,
            "frontline": user.frontline}


def _group_columns(group: Group) -> dict[str, Any]:
    return {"display_name": group.display_name, "external_id": group.external_id}


# -- users ---------------------------------------------------------------------------


def load_user(session: Session, ctx: ScimContext, user_id: str) -> User:
    """The user a write is about, locked; 404 when it is not a live user of this tenant."""
    user = store.lock_user(session, ctx.tenant.id, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found.")
    return user


def create_user(session: Session, ctx: ScimContext, body: Any) -> User:
    doc = casting.validate(body, USER_TYPE)
    return ctx.directory(session).create_user(casting.user_fields(doc))


def replace_user(session: Session, ctx: ScimContext, user_id: str, body: Any,
                 version: ExpectedVersion) -> User:
    user = load_user(session, ctx, user_id)
    doc = casting.validate(body, USER_TYPE)
    fields = casting.user_fields(doc, cleared=casting.cleared_attributes(body),
                                 stored_frontline=user.frontline)
    return ctx.directory(session).update_user(user, fields, version)


def patch_user(session: Session, ctx: ScimContext, user_id: str, body: Any,
               version: ExpectedVersion, lock: bool = True) -> User:
    """`lock=False`: the user is read without a lock, in a guarded session
    (`db.get_session`), whose write checks that it did not change since."""
    user = store.get_user_for_patch(session, ctx.tenant.id, user_id, lock)
    if user is None:
        raise NotFound(f"User {user_id} not found.")
    current = render_users(session, ctx, [user])[0]
    # The patch starts from what the IdP last said about `active`, so that a PATCH
    # that does not touch `active` repeats the IdP's word instead of the status. An IdP
    # that never said it (a user created without `active`) says nothing by a PATCH that
    # leaves it alone: the status the tenant's default gave stays, and nothing changed.
    current["active"] = _UNSAID if user.idp_active is None else user.idp_active
    outcome = apply_patch(current, body, USER_TYPE)
    said = outcome.resource.get("active")
    if said is None:
        raise InvalidValue("'active' cannot be removed: every user has a status. To disable "
                           "the user, send {\"op\": \"replace\", \"path\": \"active\", "
                           "\"value\": false}.")
    resource = outcome.resource if said is not _UNSAID else {**outcome.resource,
                                                              "active": user.active}
    doc = casting.validate(resource, USER_TYPE)
    fields = casting.user_fields(doc, complete=True)
    if said is _UNSAID:
        fields = dataclasses.replace(fields, active=None)  # not said: status left alone
    if _modules_of(outcome.resource) == _modules_of(current):
        fields = dataclasses.replace(fields, modules=None)  # untouched: no module query
    if _frontline_of(outcome.resource) == _frontline_of(current):
        fields = dataclasses.replace(fields, frontline=None)  # untouched: left as it is
    return ctx.directory(session).update_user(user, fields, version)


# `active` in the document a PATCH starts from, for a user whose IdP never said it: still
# there after the PATCH means the PATCH did not say it either. Not JSON, so no client can
# send it.
_UNSAID = object()


def _frontline_of(resource: dict[str, Any]) -> dict[str, Any]:
    for key, section in resource.items():
        if key.lower() == CONNECTOR_USER.lower() and isinstance(section, dict):
            return {k: v for k, v in section.items() if k in casting.FRONTLINE_KEYS}
    return {}


def _modules_of(resource: dict[str, Any]) -> list[str]:
    for key, section in resource.items():
        if key.lower() in (CONNECTOR_USER.lower(), CONNECTOR_GROUP.lower()) and \
                isinstance(section, dict):
            return list(section.get("modules") or [])
    return []


def delete_user(session: Session, ctx: ScimContext, user_id: str, version: ExpectedVersion) -> None:
    user = load_user(session, ctx, user_id)
    ctx.directory(session).remove_user(user, version)


# -- groups --------------------------------------------------------------------------


def load_group(session: Session, ctx: ScimContext, group_id: str, for_update: bool = False
               ) -> Group:
    group = store.get_group(session, ctx.tenant.id, group_id, for_update)
    if group is None:
        raise NotFound(f"Group {group_id} not found.")
    return group


def create_group(session: Session, ctx: ScimContext, body: Any) -> Group:
    doc = casting.validate(body, GROUP_TYPE)
    fields, members = casting.group_fields(doc)
    return ctx.directory(session).create_group(fields, members or ())


def replace_group(session: Session, ctx: ScimContext, group_id: str, body: Any,
                  version: ExpectedVersion) -> Group:
    group = load_group(session, ctx, group_id, for_update=True)
    doc = casting.validate(body, GROUP_TYPE)
    fields, members = casting.group_fields(doc)
    changes = [MemberChange("replace", tuple(members or ()))]
    return ctx.directory(session).update_group(group, fields, changes, version)


def patch_group(session: Session, ctx: ScimContext, group_id: str, body: Any,
                version: ExpectedVersion) -> Group:
    group = load_group(session, ctx, group_id, for_update=True)
    current = render_groups(session, ctx, [group], _NO_MEMBERS)[0]
    outcome = apply_patch(current, body, GROUP_TYPE)
    doc = casting.validate(outcome.resource, GROUP_TYPE)
    fields, _ = casting.group_fields(doc, complete=True)
    if _modules_of(outcome.resource) == _modules_of(current):
        fields = dataclasses.replace(fields, modules=None)  # untouched: no module query
    changes = [MemberChange(op.action, tuple(casting.member_id(v) for v in op.values))
               for op in outcome.member_ops]
    return ctx.directory(session).update_group(group, fields, changes, version)


def delete_group(session: Session, ctx: ScimContext, group_id: str, version: ExpectedVersion
                 ) -> None:
    group = load_group(session, ctx, group_id, for_update=True)
    ctx.directory(session).remove_group(group, version)


_NO_MEMBERS = Projection(GROUP_TYPE, exclude=(GROUP_TYPE.resolve("members"),))  # type: ignore[arg-type]


