"""A round's cursor over Graph's delta pages: where it starts, reading a page, moving on.

The cursor is stored on the tenant's `SyncState` (phase, next link, deltaLinks) and
moves in the transaction that applies the page it moves past. It never follows a link
twice in a round, nor to another host (`GraphClient.check_link`), nor without end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import object_session

from azure_sync import attribute_maps, mapping
from azure_sync.errors import UnsafeLink
from azure_sync.graph import GraphClient
from connector.models import SyncState


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_link: str | None
    delta_link: str | None
    # Its users parsed and mapped ahead (`azure_sync.ahead`), when it was read ahead.
    prepared: Any = field(default=None, compare=False)


def users_delta_url(client: GraphClient, select: tuple[str, ...] = mapping.USER_SELECT) -> str:
    """Where a round without a users deltaLink starts: every user, with the properties
    the tenant's mapping table reads (`attribute_maps.users_select`)."""
    return client.url("users/delta", {"$select": ",".join(select)})


def groups_delta_url(client: GraphClient) -> str:
    """Where a round without a groups deltaLink reads the groups: every group."""
    return client.url("groups/delta", {"$select": ",".join(mapping.GROUP_SELECT)})


def start(state: SyncState, client: GraphClient, full: bool) -> None:
    """Put the cursor at the users: from scratch for a full round, else where the last
    round's deltaLink left them."""
    state.phase = "users"
    state.full_round = full
    state.pending_users_delta_link = None
    session = object_session(state)
    select = (attribute_maps.users_select(session, state.tenant_id) if session is not None
              else mapping.USER_SELECT)
    state.next_link = ((None if full else state.users_delta_link)
                       or users_delta_url(client, select))


def check_link(link: str, followed: set[str], pages: int, max_pages: int) -> None:
    """Refuse a link the round already followed (a loop), or one page too many."""
    if link in followed:
        raise UnsafeLink("Graph sent a nextLink this round already followed (a loop); "
                         "the round stops.")
    if pages >= max_pages:
        raise UnsafeLink(f"The round read {pages} pages without reaching a deltaLink; "
                         "it stops as runaway (azure_sync.max_pages_per_round).")


def read_page(client: GraphClient, link: str) -> Page:
    """GET one delta page; refuse one that has no items or leads nowhere."""
    page = client.get(link)
    items = page.get("value")
    next_link = page.get("@odata.nextLink")
    delta_link = page.get("@odata.deltaLink")
    if not isinstance(items, list) or not (isinstance(next_link, str)
                                           or isinstance(delta_link, str)):
        raise UnsafeLink("A Graph page had neither items nor a next or delta link.")
    return Page(items, next_link if isinstance(next_link, str) else None,
                delta_link if isinstance(delta_link, str) else None)


def advance(state: SyncState, client: GraphClient, phase: str, page: Page) -> None:
    """Move the cursor past the page: to its nextLink; at the users' deltaLink, on to
    the groups; at the groups' deltaLink, to the round's end (`done`)."""
    if page.next_link is not None:
        state.next_link = client.check_link(page.next_link)
    elif phase == "users":
        assert page.delta_link is not None
        state.pending_users_delta_link = client.check_link(page.delta_link)
        state.phase = "groups"
        # A full round reads the groups' members all again too.
        state.next_link = (None if state.full_round else state.groups_delta_link
                           ) or groups_delta_url(client)
    else:
        assert page.delta_link is not None
        state.groups_delta_link = client.check_link(page.delta_link)
        state.phase = "done"
        state.next_link = None
