"""Reads for the SCIM endpoint: indexed lookups and pages, batched per page.

Every query is scoped to one tenant first. Nothing here loads a relationship the
response will not show, and a page costs a fixed number of queries (not one per row).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

from connector.models import Group, GroupModule, Membership, User, UserModule


def get_user(session: Session, tenant_id: str, user_id: str, for_update: bool = False
             ) -> User | None:
    query = select(User).where(User.tenant_id == tenant_id, User.id == user_id,
                               User.removed_at.is_(None))
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def get_group(session: Session, tenant_id: str, group_id: str, for_update: bool = False
              ) -> Group | None:
    query = select(Group).where(Group.tenant_id == tenant_id, Group.id == group_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def page(session: Session, query: Select[Any], order: Sequence[ColumnElement[Any]],
         offset: int, limit: int) -> tuple[int, list[Any]]:
    """Count the matches in one query and fetch one page in another."""
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if limit <= 0 or offset >= total:
        return total, []
    rows = list(session.scalars(query.order_by(*order).offset(offset).limit(limit)))
    return total, rows


def users_query(tenant_id: str, clause: ColumnElement[bool] | None) -> Select[Any]:
    query = select(User).where(User.tenant_id == tenant_id, User.removed_at.is_(None))
    return query.where(clause) if clause is not None else query


def groups_query(tenant_id: str, clause: ColumnElement[bool] | None) -> Select[Any]:
    query = select(Group).where(Group.tenant_id == tenant_id)
    return query.where(clause) if clause is not None else query


def user_modules(session: Session, tenant_id: str, user_ids: Sequence[str]
                 ) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    if user_ids:
        for user_id, module in session.execute(
                select(UserModule.user_id, UserModule.module).where(
                    UserModule.tenant_id == tenant_id, UserModule.user_id.in_(user_ids))
                .order_by(UserModule.module)):
            out[user_id].append(module)
    return out


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


def user_groups(session: Session, tenant_id: str, user_ids: Sequence[str], base_url: str
                ) -> dict[str, list[dict[str, Any]]]:
    """Direct group memberships of the given users, for User.groups."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not user_ids:
        return out
    rows = session.execute(
        select(Membership.member_id, Group.id, Group.display_name)
        .join(Group, and_(Group.tenant_id == Membership.tenant_id,
                          Group.id == Membership.group_id))
        .where(Membership.tenant_id == tenant_id, Membership.member_id.in_(user_ids))
        .order_by(Group.display_name_norm, Group.id))
    for member_id, group_id, name in rows:
        out[member_id].append({"value": group_id, "$ref": f"{base_url}/Groups/{group_id}",
                               "display": name, "type": "direct"})
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
