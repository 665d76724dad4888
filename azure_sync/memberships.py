"""A user new to the connector in an incremental round gets all its groups.

`/groups/delta` reports membership changes, so a user who enters the scope (it joined
a scope group, its domain came into scope, it was restored or adopted) arrives without
its memberships of groups that did not change. Entra's own provisioning reads the
user's groups in that case; so does the round's end here: `/users/{id}/memberOf`, the
groups the connector syncs, added as memberships. Users waiting for this are kept in
`sync_pending` (kind "groups") until it is done, so a failure or a crash loses none.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from azure_sync import pending
from azure_sync.errors import GraphError, UnsafeLink
from azure_sync.graph import GraphClient
from azure_sync.writer import write_context
from connector.commands import GroupFields, MemberChange
from connector.directory import Directory
from connector.models import Group, Membership, Tenant, User

GROUP_TYPE = "#microsoft.graph.group"
PAGE_SIZE = "999"
# Users handled per transaction (each needs one Graph call or more).
BATCH = 50


def groups_of(client: GraphClient, object_id: str) -> list[str] | None:
    """The object ids of the groups the user is a direct member of; None if Graph
    knows no such user any more."""
    link: str | None = client.url(
        f"users/{urllib.parse.quote(object_id, safe='')}/memberOf",
        {"$select": "id", "$top": PAGE_SIZE})
    found: list[str] = []
    followed: set[str] = set()
    while link is not None:
        if link in followed:
            raise UnsafeLink("Graph sent a memberOf nextLink already followed (a loop).")
        followed.add(link)
        try:
            page = client.get(link)
        except GraphError as exc:
            if exc.status == 404:
                return None
            raise
        for item in page.get("value") or ():
            if (isinstance(item, dict) and isinstance(item.get("id"), str)
                    and item.get("@odata.type", GROUP_TYPE) == GROUP_TYPE):
                found.append(item["id"])
        following = page.get("@odata.nextLink")
        link = client.check_link(following) if isinstance(following, str) else None
    return found


def join_groups(maker: sessionmaker[Session], tenant_id: str, run_id: int,
                client: GraphClient, now: Callable[[], dt.datetime],
                hold: Callable[[Session], None]) -> dict[str, int]:
    """Read the groups of every user waiting for them and add the memberships of the
    groups the connector syncs. `hold(s)` checks (and renews) the round's lease in
    each transaction before it writes."""
    added = users = 0
    done: set[str] = set()
    while True:
        with maker() as s:
            rows = [r.object_id for r in pending.waiting(s, tenant_id, pending.GROUPS_DUE,
                                                         limit=BATCH + len(done))
                    if r.object_id not in done][:BATCH]
        if not rows:
            break
        found = {oid: groups_of(client, oid) for oid in rows}
        with maker() as s:
            hold(s)
            tenant = s.get(Tenant, tenant_id)
            assert tenant is not None
            at = now()
            directory = Directory(s, tenant, write_context(tenant_id, run_id, at))
            with directory.batched_events():
                for oid, group_oids in found.items():
                    if group_oids:
                        added += _join(s, directory, tenant_id, oid, group_oids)
            pending.forget(s, tenant_id, pending.GROUPS_DUE, rows)
            s.commit()
        users += len(rows)
        done.update(rows)
    return {"memberships_read": users, "memberships_joined": added} if users else {}


def _join(s: Session, directory: Directory, tenant_id: str, object_id: str,
          group_oids: list[str]) -> int:
    user_id = s.scalar(select(User.id).where(User.tenant_id == tenant_id,
                                             User.external_id == object_id,
                                             User.removed_at.is_(None)))
    if user_id is None:
        return 0
    groups = list(s.scalars(select(Group).where(Group.tenant_id == tenant_id,
                                                Group.external_id.in_(group_oids))))
    already = set(s.scalars(select(Membership.group_id).where(
        Membership.tenant_id == tenant_id, Membership.member_id == user_id)))
    joined = 0
    for group in groups:
        if group.id in already:
            continue
        directory.update_group(group, GroupFields(group.display_name, group.external_id,
                                                  dict(group.data or {})),
                               [MemberChange("add", (user_id,))])
        joined += 1
    return joined
