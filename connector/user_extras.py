"""What a session already knows of users' modules and groups, so that rendering a user
just written does not read back what its writer holds.

The directory service (`connector.directory`) keeps it true as it writes; the SCIM reads
(`scim.store`) consult it and fill it. It is a shortcut only, never the truth: anything
that could make it wrong (a group change, a removal, a rollback) forgets it all.

The values are in the form the SCIM reads aggregate them in SQL, so a cached answer and
a fresh one render the same way:

- modules: the user's own module names joined with `MODULE_SEP`, or None for none;
- groups: the user's direct groups as a JSON array of `[group id, display name]`, or None
  for none (a user created in this transaction belongs to no group yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

MODULE_SEP = "\x1f"  # ASCII unit separator: cannot occur in a module name
_KEY = "user_extras"

Extras = tuple[str | None, str | None]  # (modules joined, groups JSON)


def _cache(session: Session) -> dict[str, Extras]:
    return session.info.setdefault(_KEY, {})


def joined_modules(modules: Sequence[str]) -> str | None:
    return MODULE_SEP.join(modules) or None


def known(session: Session, user_id: str) -> Extras | None:
    """What the session knows of a user's modules and groups, or None."""
    return _cache(session).get(user_id)


def remember(session: Session, user_id: str, modules: str | None, groups: str | None) -> None:
    """Remember a complete answer (both modules and groups) read for a user."""
    _cache(session)[user_id] = (modules, groups)


def remember_new_user(session: Session, user_id: str, modules: Sequence[str]) -> None:
    """A user this transaction created: its own modules, and no group yet."""
    _cache(session)[user_id] = (joined_modules(modules), None)


def modules_changed(session: Session, user_id: str, modules: Sequence[str]) -> None:
    """A user's own modules were replaced: update what is known of it, if anything."""
    cache = _cache(session)
    if user_id in cache:
        cache[user_id] = (joined_modules(modules), cache[user_id][1])


def forget_all(session: Session) -> None:
    """Drop everything known: group memberships or a removal may have changed it."""
    session.info.pop(_KEY, None)


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session: Session, _transaction: Any) -> None:
    # A rolled-back write (a failed /Bulk operation's savepoint, a failed request) may
    # have changed what the cache says.
    forget_all(session)
