"""Reading the round's next Graph page while this one is applied.

A delta page names the next one (`@odata.nextLink`), so while the database applies page
N, a second thread can already GET page N+1 and turn its users into the fields a new
user is created with (`mapping.parse_user`, `mapping.user_fields`: pure functions of the
item and the tenant's mapping table). Against the real Graph a page takes a few hundred
milliseconds to arrive, about what applying it takes: reading ahead nearly halves an
initial round; against a fast Graph it still takes the mapping off the critical path.

Nothing read ahead is written anywhere: the page is applied by the round's thread, in
its transaction, exactly as if it had been read there. A page read ahead and then not
used (the round stopped, the lease was lost, the cursor is elsewhere) is dropped; the
link is read again when a round gets there. Only a nextLink of the same phase is read
ahead, once `GraphClient.check_link` accepts it; the round's own checks (a link seen
twice, too many pages) run on it before it is used, as on any page.

What it prepares is used only when it still holds: for an item laid over a kept one,
for a user whose manager must be resolved (a database lookup), or when the tenant's
mapping table changed meanwhile, the applier maps the item itself.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from azure_sync import mapping
from azure_sync.errors import UnsafeLink
from azure_sync.graph import GraphClient
from connector.commands import UserFields


@dataclass
class PreparedUsers:
    """A users page's items, parsed, and the fields of those that would be created,
    under the mapping `steps` they were computed with."""

    steps: tuple[Any, ...]
    deltas: list[mapping.UserDelta | None]  # per item; None: malformed
    fields: dict[str, UserFields | None] = field(default_factory=dict)

    def fields_for(self, delta: mapping.UserDelta, rules: mapping.Rules
                   ) -> UserFields | None | Literal[False]:
        """The new user's fields prepared for `delta`, or False when there are none that
        hold (another mapping table, a manager to resolve, not prepared)."""
        if rules.steps != self.steps or delta.object_id not in self.fields:
            return False
        return self.fields[delta.object_id]


def prepare_users(items: list[Any], rules: mapping.Rules) -> PreparedUsers:
    """Parse the items and map the ones a creation would map, without a database: a user
    whose manager changes is left to the applier (resolving it is a lookup)."""
    pure = mapping.Rules(rules.table, None, rules.steps)
    prepared = PreparedUsers(rules.steps, [])
    for item in items:
        try:
            delta = mapping.parse_user(item)
        except mapping.MalformedItem:
            prepared.deltas.append(None)
            continue
        prepared.deltas.append(delta)
        if delta.removed is None and mapping.MANAGER not in delta.changes:
            prepared.fields[delta.object_id] = mapping.user_fields(
                delta.object_id, None, delta.changes, pure)
    return prepared


@dataclass
class _Read:
    link: str
    thread: threading.Thread | None = None
    page: Any = None
    error: BaseException | None = None


class PageAhead:
    """At most one page read ahead, in a daemon thread. `take(link)` returns the page
    read ahead for `link`, or None; `start(link, …)` begins reading the next one."""

    def __init__(self, client: GraphClient, read: Any) -> None:
        self.client = client
        self.read = read  # cursor.read_page
        self._current: _Read | None = None

    def start(self, link: str, rules: mapping.Rules | None) -> None:
        """Read `link` ahead (and prepare its users under `rules`, when given)."""
        self.close()
        try:
            self.client.check_link(link)
        except UnsafeLink:
            return  # the cursor refuses it with its reason when it gets there
        current = _Read(link)

        def run() -> None:  # writes only its own _Read: a dropped one is never read
            try:
                page = self.read(self.client, link)
                if rules is not None:
                    page = dataclasses.replace(page, prepared=prepare_users(page.items, rules))
                current.page = page
            except BaseException as exc:  # handed to the round's thread in take()
                current.error = exc

        current.thread = threading.Thread(target=run, name="graph-read-ahead", daemon=True)
        self._current = current
        current.thread.start()

    def take(self, link: str) -> Any:
        """The page read ahead for `link` (waiting for it), or None if another link was
        read ahead or none. An error reading it is raised here, as reading it here
        would have raised it."""
        current, self._current = self._current, None
        if current is None or current.thread is None or current.link != link:
            return None
        current.thread.join()
        if current.error is not None:
            raise current.error
        return current.page

    def close(self) -> None:
        """Drop what was read ahead. A read in flight finishes in its daemon thread (its
        HTTP timeouts bound it) and its result is dropped."""
        self._current = None
