"""Who a round syncs: users of the chosen domains and/or members of the chosen groups.

Group scope reads each chosen group's members from Graph at the start of every round
(`/groups/{id}/members`, or `/transitiveMembers` to count nested groups too; Graph
documents both with `$select`, `$top` up to 999 and nextLink paging). That is what makes
a membership change in Entra ID take effect at the next round even though the user
itself did not change (`/users/delta` says nothing then): a user who joined a chosen
group is created from the member listing, one who left is removed at the round's end,
under the deletion threshold like any removal.

The default counts direct members only, as Entra's own "sync only assigned users and
groups" provisioning does; `transitive` is for tenants that nest groups.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from azure_sync import mapping
from azure_sync.errors import GraphError, ScopeEmpty, UnsafeLink
from azure_sync.graph import GraphClient

MODES = ("direct", "transitive")
USER_TYPE = "#microsoft.graph.user"
MEMBERS_PER_PAGE = "999"  # Graph's largest page for member listings
MAX_GROUPS = 50


@dataclass(frozen=True)
class ScopeSettings:
    """What the registration chose (read once per round)."""

    domains: frozenset[str] = frozenset()
    groups: tuple[str, ...] = ()
    mode: str = "direct"


@dataclass(frozen=True)
class Scope:
    domains: frozenset[str] = frozenset()
    # Graph object ids of the users in the chosen groups; None: no group scope.
    members: frozenset[str] | None = None
    missing_groups: tuple[str, ...] = ()

    @property
    def by_groups(self) -> bool:
        return self.members is not None

    def admits(self, object_id: str, user_principal_name: str) -> bool:
        if self.domains and \
                user_principal_name.rpartition("@")[2].casefold() not in self.domains:
            return False
        return self.members is None or object_id in self.members


def settings_of(registration: Any) -> ScopeSettings:
    if registration is None:
        return ScopeSettings()
    domains = frozenset(d.casefold().lstrip("@") for d in registration.scope_domains or ())
    return ScopeSettings(domains, tuple(registration.scope_groups or ()),
                         registration.scope_group_mode or "direct")


def read_scope(client: GraphClient, settings: ScopeSettings,
               on_page: Callable[[list[dict[str, Any]]], None] | None = None) -> Scope:
    """The round's scope; with group scope, every chosen group's users, each page of
    them handed to `on_page` as it arrives (to create the users who entered the scope).
    A group Graph does not know (404) counts as empty. Raises ScopeEmpty when the chosen
    groups have no user at all: that is a mistake or a fault, never "remove everyone"."""
    if not settings.groups:
        return Scope(settings.domains)
    members: set[str] = set()
    missing: list[str] = []
    for group_id in settings.groups:
        try:
            for users in member_pages(client, group_id, settings.mode):
                members.update(user["id"] for user in users)
                if on_page is not None:
                    on_page(users)
        except GraphError as exc:
            if exc.status != 404:
                raise
            missing.append(group_id)
    if not members:
        raise ScopeEmpty(
            f"The scope groups ({', '.join(settings.groups)}) have no members in Entra ID"
            + (f" ({', '.join(missing)} not found)" if missing else "")
            + ": the round stops rather than remove every user. Check the scope groups "
            "on the app registration.")
    return Scope(settings.domains, frozenset(members), tuple(missing))


def member_pages(client: GraphClient, group_id: str, mode: str
                 ) -> Iterator[list[dict[str, Any]]]:
    """The users among a group's members (or transitive members), a page at a time,
    with the properties a users/delta item has."""
    listing = "transitiveMembers" if mode == "transitive" else "members"
    link: str | None = client.url(
        f"groups/{urllib.parse.quote(group_id, safe='')}/{listing}",
        {"$select": ",".join(("id", *mapping.FULL_SELECT)), "$top": MEMBERS_PER_PAGE})
    seen: set[str] = set()
    while link is not None:
        if link in seen:
            raise UnsafeLink("Graph sent a members nextLink already followed (a loop); "
                             "the round stops.")
        seen.add(link)
        page = client.get(link)
        items = page.get("value")
        if not isinstance(items, list):
            raise UnsafeLink(f"A page of group {group_id}'s members had no items.")
        yield [item for item in items if isinstance(item, dict)
               and item.get("@odata.type") == USER_TYPE and isinstance(item.get("id"), str)]
        following = page.get("@odata.nextLink")
        link = client.check_link(following) if isinstance(following, str) else None
