"""Reads for the SCIM endpoint: indexed lookups and pages, batched per page.

Every query is scoped to one tenant first. Nothing here loads a relationship the
response will not show, and a page costs a fixed number of queries (not one per row).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal,
    null,
    select,
)
from sqlalchemy.orm import Session

from connector import user_extras as known_extras
from connector.models import Group, GroupModule, Membership, User, UserModule

# -- users as rows, with their modules and groups in the same statement -------------------
#
# The hot reads (GET by id, filter, pages) fetch a user's columns, its own modules and its
# direct groups in ONE statement: correlated subqueries aggregate the modules into a
# separated string and the groups into a JSON array. Each statement is built once per
# dialect and reused with bound parameters, so a request spends its time in the database
# rather than in building SQL.

_U = User.__table__
_UM = UserModule.__table__
_M = Membership.__table__
_G = Group.__table__
SEP = known_extras.MODULE_SEP

USER_COLUMNS = (_U.c.tenant_id, _U.c.id, _U.c.user_name, _U.c.external_id, _U.c.display_name,
                _U.c.active, _U.c.idp_active, _U.c.guest, _U.c.external_company_guest,
                _U.c.admin, _U.c.frontline, _U.c.created_at, _U.c.modified_at, _U.c.version,
                _U.c.data)


def _user_extras(dialect: str, with_groups: bool) -> tuple[ColumnElement[Any], ...]:
    if dialect == "postgresql":
        modules_agg: ColumnElement[Any] = func.string_agg(_UM.c.module, literal(SEP))
        groups_agg: ColumnElement[Any] = cast(
            func.json_agg(func.json_build_array(_G.c.id, _G.c.display_name)), Text)
    else:
        modules_agg = func.group_concat(_UM.c.module, SEP)
        groups_agg = func.json_group_array(func.json_array(_G.c.id, _G.c.display_name))
    modules = (select(modules_agg)
               .where(_UM.c.tenant_id == _U.c.tenant_id, _UM.c.user_id == _U.c.id)
               .scalar_subquery().label("modules_agg"))
    if not with_groups:
        return modules, null().label("groups_agg")
    groups = (select(groups_agg)
              .select_from(_M.join(_G, and_(_G.c.tenant_id == _M.c.tenant_id,
                                            _G.c.id == _M.c.group_id)))
              .where(_M.c.tenant_id == _U.c.tenant_id, _M.c.member_id == _U.c.id)
              .scalar_subquery().label("groups_agg"))
    return modules, groups


# `Select[*tuple[Any, ...]]`: a select of any columns (SQLAlchemy types a Select by its
# columns' types; `Select[Any]` would be a select of one column).
_ROWS: dict[tuple[str, bool], Select[*tuple[Any, ...]]] = {}


def user_rows_query(dialect: str, with_groups: bool) -> Select[*tuple[Any, ...]]:
    """Users' columns plus `modules_agg` and `groups_agg`; add WHERE and ORDER BY."""
    query = _ROWS.get((dialect, with_groups))
    if query is None:
        query = _ROWS[dialect, with_groups] = select(*USER_COLUMNS,
                                                     *_user_extras(dialect, with_groups))
    return query


_BY_ID: dict[tuple[str, bool], Select[*tuple[Any, ...]]] = {}
_EXTRAS_BY_ID: dict[tuple[str, bool], Select[*tuple[Any, ...]]] = {}


def get_user_row(conn: Connection, tenant_id: str, user_id: str, with_groups: bool = True
                 ) -> Any:
    """One live user with its modules and groups, in one statement; None if absent."""
    dialect = conn.dialect.name
    statement = _BY_ID.get((dialect, with_groups))
    if statement is None:
        statement = _BY_ID[dialect, with_groups] = user_rows_query(dialect, with_groups).where(
            _U.c.tenant_id == bindparam("tenant_id"), _U.c.id == bindparam("user_id"),
            _U.c.removed_at.is_(None))
    return conn.execute(statement, {"tenant_id": tenant_id, "user_id": user_id}).first()


# `userName eq "…"` / `externalId eq "…"`: what identity providers send before every
# create. The filter compiler would build the same condition; a statement built once
# skips rebuilding and re-keying it per request.
_LOOKUP_COLUMNS: dict[str, tuple[Any, Any]] = {
    "userName": (_U.c.user_name_norm, str.casefold),  # caseExact false
    "externalId": (_U.c.external_id, None),  # caseExact true
}
_LOOKUPS: dict[tuple[str, str, bool], Select[*tuple[Any, ...]]] = {}


def lookup_attributes() -> frozenset[str]:
    return frozenset(_LOOKUP_COLUMNS)


def lookup_page(session: Session, tenant_id: str, attribute: str, value: str, offset: int,
                limit: int, with_groups: bool) -> list[Any]:
    """Live users whose `attribute` equals `value`, a page in id order."""
    column, normalise = _LOOKUP_COLUMNS[attribute]
    dialect = session.get_bind().dialect.name
    statement = _LOOKUPS.get((dialect, attribute, with_groups))
    if statement is None:
        statement = _LOOKUPS[dialect, attribute, with_groups] = (
            user_rows_query(dialect, with_groups)
            .where(_U.c.tenant_id == bindparam("tenant_id"), _U.c.removed_at.is_(None),
                   column == bindparam("value"))
            .order_by(_U.c.id).offset(bindparam("offset")).limit(bindparam("limit")))
    params = {"tenant_id": tenant_id, "value": normalise(value) if normalise else value,
              "offset": offset, "limit": limit}
    return list(session.execute(statement, params))


def user_extras(session: Session, tenant_id: str, user_ids: Sequence[str], with_groups: bool
                ) -> dict[str, tuple[str | None, str | None]]:
    """`(modules_agg, groups_agg)` for users already loaded as ORM objects (write paths);
    what the session's writer already knows is not read again."""
    found = {uid: known for uid in user_ids
             if (known := known_extras.known(session, uid)) is not None}
    missing = [uid for uid in user_ids if uid not in found]
    if not missing:
        return found
    dialect = session.get_bind().dialect.name
    statement = _EXTRAS_BY_ID.get((dialect, with_groups))
    if statement is None:
        statement = _EXTRAS_BY_ID[dialect, with_groups] = select(
            _U.c.id, *_user_extras(dialect, with_groups)).where(
            _U.c.tenant_id == bindparam("tenant_id"),
            _U.c.id.in_(bindparam("user_ids", expanding=True)))
    rows = session.execute(statement, {"tenant_id": tenant_id, "user_ids": missing})
    for row in rows:
        found[row[0]] = (row[1], row[2])
        if with_groups:  # only complete answers are worth remembering
            known_extras.remember(session, row[0], row[1], row[2])
    return found


def decode_modules(modules_agg: str | None) -> list[str] | None:
    return sorted(modules_agg.split(SEP)) if modules_agg else None


def decode_groups(groups_agg: str | None, base_url: str) -> list[dict[str, Any]] | None:
    """User.groups from the aggregated `[[id, displayName], …]`, by name then id."""
    if not groups_agg:
        return None
    pairs = [p for p in json.loads(groups_agg) if p and p[0] is not None]
    pairs.sort(key=lambda p: (str(p[1]).casefold(), p[0]))
    return [{"value": gid, "$ref": f"{base_url}/Groups/{gid}", "display": name,
             "type": "direct"} for gid, name in pairs] or None


_USER_FOR_UPDATE = (select(User).where(User.tenant_id == bindparam("tenant_id"),
                                       User.id == bindparam("user_id"),
                                       User.removed_at.is_(None))
                    .with_for_update())
_USER_WITH_EXTRAS: dict[tuple[str, bool], Select[*tuple[Any, ...]]] = {}


def lock_user(session: Session, tenant_id: str, user_id: str) -> User | None:
    """A live user as an ORM object, locked for the write that follows (reads use
    `get_user_row`)."""
    return session.scalars(_USER_FOR_UPDATE,
                           {"tenant_id": tenant_id, "user_id": user_id}).first()


def get_user_for_patch(session: Session, tenant_id: str, user_id: str, lock: bool = True
                       ) -> User | None:
    """Lock a live user and learn its modules and groups in the same statement (the
    PATCH path renders the user before patching it). `lock=False`: read it without a
    lock (the write then checks the version read, `db.NeedsTransaction`)."""
    dialect = session.get_bind().dialect.name
    statement = _USER_WITH_EXTRAS.get((dialect, lock))
    if statement is None:
        statement = (
            select(User, *_user_extras(dialect, True))
            .where(User.tenant_id == bindparam("tenant_id"), User.id == bindparam("user_id"),
                   User.removed_at.is_(None)))
        if lock:
            statement = statement.with_for_update(of=User)
        _USER_WITH_EXTRAS[dialect, lock] = statement
    row = session.execute(statement, {"tenant_id": tenant_id, "user_id": user_id}).first()
    if row is None:
        return None
    known_extras.remember(session, row[0].id, row[1], row[2])
    return row[0]


def get_group(session: Session, tenant_id: str, group_id: str, for_update: bool = False
              ) -> Group | None:
    query = select(Group).where(Group.tenant_id == tenant_id, Group.id == group_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def user_conditions(tenant_id: str, clause: ColumnElement[bool] | None
                    ) -> list[ColumnElement[bool]]:
    where = [_U.c.tenant_id == tenant_id, _U.c.removed_at.is_(None)]
    return where if clause is None else [*where, clause]


def group_conditions(tenant_id: str, clause: ColumnElement[bool] | None
                     ) -> list[ColumnElement[bool]]:
    where = [Group.tenant_id == tenant_id]
    return where if clause is None else [*where, clause]


def count_users(session: Session, where: Sequence[ColumnElement[bool]]) -> int:
    return session.scalar(select(func.count()).select_from(_U).where(*where)) or 0


def count_groups(session: Session, where: Sequence[ColumnElement[bool]]) -> int:
    return session.scalar(select(func.count()).select_from(_G).where(*where)) or 0


def user_page(session: Session, where: Sequence[ColumnElement[bool]],
              order: Sequence[ColumnElement[Any]], offset: int, limit: int, with_groups: bool
              ) -> list[Any]:
    """One page of users in two steps: the page's keys first (an index walk over the
    skipped rows), then columns, modules and groups for those rows only. In one step,
    PostgreSQL evaluated the modules/groups subqueries for every row OFFSET skipped."""
    dialect = session.get_bind().dialect.name
    keys = (select(_U.c.tenant_id, _U.c.id).where(*where).order_by(*order)
            .offset(offset).limit(limit).subquery("page"))
    query = (user_rows_query(dialect, with_groups)
             .join(keys, and_(keys.c.tenant_id == _U.c.tenant_id, keys.c.id == _U.c.id))
             .order_by(*order))
    return list(session.execute(query))


def group_page(session: Session, where: Sequence[ColumnElement[bool]],
               order: Sequence[ColumnElement[Any]], offset: int, limit: int) -> list[Group]:
    query = select(Group).where(*where).order_by(*order).offset(offset).limit(limit)
    return list(session.scalars(query))


def group_modules(session: Session, tenant_id: str, group_ids: Sequence[str]
                  ) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    if group_ids:
        for group_id, module in session.execute(
                select(GroupModule.group_id, GroupModule.module).where(
                    GroupModule.tenant_id == tenant_id, GroupModule.group_id.in_(group_ids))
                .order_by(GroupModule.module)):
            out[group_id].append(module)
    return out


def group_members(session: Session, tenant_id: str, group_ids: Sequence[str], base_url: str
                  ) -> dict[str, list[dict[str, Any]]]:
    """Direct members of the given groups, in one query on the membership table alone.

    No `display`: RFC 7643 §8.7.1 does not define it for Group.members, and leaving it out
    keeps a 10,000-member group to one index scan instead of two joins.
    """
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not group_ids:
        return out
    rows = session.execute(
        select(Membership.group_id, Membership.member_id, Membership.member_type)
        .where(Membership.tenant_id == tenant_id, Membership.group_id.in_(group_ids))
        .order_by(Membership.group_id, Membership.member_id))
    for group_id, member_id, member_type in rows:
        kind = "Users" if member_type == "User" else "Groups"
        out[group_id].append({"value": member_id, "$ref": f"{base_url}/{kind}/{member_id}",
                              "type": member_type})
    return out
    member_user = User.__table__.alias("mu")
    member_group = Group.__table__.alias("mg")
    rows = session.execute(
        select(Membership.group_id, Membership.member_id, Membership.member_type,
               func.coalesce(member_user.c.display_name, member_user.c.user_name,
                             member_group.c.display_name))
        .outerjoin(member_user, and_(member_user.c.tenant_id == Membership.tenant_id,
                                     member_user.c.id == Membership.member_id))
        .outerjoin(member_group, and_(member_group.c.tenant_id == Membership.tenant_id,
                                      member_group.c.id == Membership.member_id))
        .where(Membership.tenant_id == tenant_id, Membership.group_id.in_(group_ids))
        .order_by(Membership.group_id, Membership.member_id))
    for group_id, member_id, member_type, display in rows:
        ref = f"{base_url}/{'Users' if member_type == 'User' else 'Groups'}/{member_id}"
        item = {"value": member_id, "$ref": ref, "type": member_type}
        if display is not None:
            item["display"] = display
        out[group_id].append(item)
    return out
