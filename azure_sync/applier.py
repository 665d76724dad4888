"""One Graph delta page applied through the directory, in the caller's transaction.

Applying is an idempotent upsert by Graph object id, so a page applied twice (a round
resumed after a crash) changes nothing the second time. A page is applied the fast way
first (its users looked up together, its new users created with one INSERT per table);
if some item fails, again one item at a time, so that one bad object is skipped and
counted instead of stopping the round.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from azure_sync import mapping, staging
from azure_sync import scope as scoping
from azure_sync.writer import log_event, stored_profile, write_context
from connector.commands import GroupFields, MemberChange, UserFields
from connector.directory import Directory
from connector.errors import Conflict, DomainError
from connector.models import EntraRegistration, Group, Membership, Tenant, User


def apply_page(s: Session, tenant: Tenant, run_id: int, full_round: bool, phase: str,
               items: list[Any], scope: scoping.Scope, now: dt.datetime) -> PageApplier:
    """Apply a round's page in the caller's transaction, as written at `now`: the fast
    way first; if some item fails, again one item at a time."""
    applier = PageApplier(s, tenant, run_id, full_round, now, scope=scope)
    try:
        with s.begin_nested():
            applier.apply(phase, items, careful=False)
    except (DomainError, IntegrityError):
        applier = PageApplier(s, tenant, run_id, full_round, now, scope=scope)
        applier.apply(phase, items, careful=True)
    return applier


def not_synced(s: Session, tenant_id: str, users: list[dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """The members among `users` (a scope group's page) who are not live users of the
    tenant: they entered the scope."""
    ids = [user["id"] for user in users]
    live = set(s.scalars(select(User.external_id).where(
        User.tenant_id == tenant_id, User.external_id.in_(ids), User.removed_at.is_(None))))
    return [user for user in users if user["id"] not in live]


def entered_counts(counts: Counter[str]) -> dict[str, int]:
    """A scope page's counts, with what it created or restored also counted as entering."""
    entered = dict(counts)
    joined = counts.get("created", 0) + counts.get("restored", 0)
    if joined:
        entered["entered_scope"] = joined
    return entered


class PageApplier:
    """Apply one page's items in the caller's transaction; count what happened."""

    def __init__(self, s: Session, tenant: Tenant, run_id: int, full_round: bool,
                 now: dt.datetime, mode: str = "round",
                 scope: scoping.Scope | None = None) -> None:
        self.s = s
        self.tenant = tenant
        self.run_id = run_id
        self.full_round = full_round
        # A full round marks every user and group it reads with its run, in the write
        # that creates or changes them; at its end, the synced ones not marked are gone.
        self.seen_run = run_id if full_round else None
        # round: destructive changes are staged for the round's end; immediate: applied
        # at once (an admin's "sync this user now"); preview: counted, nothing stored.
        self.mode = mode
        self.directory = Directory(s, tenant, write_context(tenant.id, run_id, now))
        self.counts: Counter[str] = Counter()
        self.staged: list[tuple[str, str, str | None]] = []
        if scope is None:  # the domains only (no group scope read from Graph)
            scope = scoping.Scope(scoping.settings_of(s.get(EntraRegistration, tenant.id))
                                  .domains)
        self.scope = scope

    def apply(self, phase: str, items: list[Any], careful: bool) -> None:
        """Apply the page's items; `careful` puts each in its own savepoint so a failing
        one (a userPrincipalName clash…) is skipped and counted."""
        with self.directory.batched_events():
            self._apply(phase, items, careful)

    def _apply(self, phase: str, items: list[Any], careful: bool) -> None:
        if phase == "users" and not careful:
            self._users_batched(items)
            return
        parse = mapping.parse_user if phase == "users" else mapping.parse_group
        apply = self._user if phase == "users" else self._group
        for item in items:
            try:
                delta = parse(item)
            except mapping.MalformedItem:
                self.counts["skipped"] += 1
                continue
            if not careful:
                apply(delta)  # type: ignore[arg-type]
                continue
            try:
                with self.s.begin_nested():
                    apply(delta)  # type: ignore[arg-type]
            except (DomainError, IntegrityError) as exc:
                self.counts["errors"] += 1
                what = getattr(exc, "message", type(exc).__name__)
                log_event(self.tenant.id, self.run_id, "item skipped",
                          f"{phase[:-1]} {delta.object_id}: {what}")
        self._flush_staged()

    # -- users ------------------------------------------------------------------------------

    def _users_batched(self, items: list[Any]) -> None:
        """The page's users with one lookup for all, and its new users created with one
        INSERT per table: an initial round is nearly all creations."""
        deltas = []
        for item in items:
            try:
                deltas.append(mapping.parse_user(item))
            except mapping.MalformedItem:
                self.counts["skipped"] += 1
        ids = [d.object_id for d in deltas]
        if len(set(ids)) != len(ids):  # the same object twice in a page: in order, one by one
            for delta in deltas:
                self._user(delta)
        else:
            found = self._prefetch(ids)
            new = []
            for delta in deltas:
                if delta.object_id in found or delta.removed is not None:
                    self._user(delta, found.get(delta.object_id))
                    continue
                fields = mapping.user_fields(delta.object_id, None, delta.changes)
                if fields is None:
                    self.counts["skipped"] += 1
                elif not self.scope.admits(delta.object_id, fields.user_name):
                    self.counts["out_of_scope"] += 1
                else:
                    new.append(fields)
            self.directory.create_users(new, self.seen_run)
            self.counts["created"] += len(new)
            self._seen(len(new))
        self._flush_staged()

    def _prefetch(self, object_ids: list[str]) -> dict[str, User]:
        """The page's known users by object id (a live one before a removed one)."""
        if not object_ids:
            return {}
        rows = self.s.scalars(select(User).where(
            User.tenant_id == self.tenant.id, User.external_id.in_(object_ids),
            User.purged_at.is_(None)).order_by(User.removed_at.is_not(None))
            .with_for_update()).all()
        found: dict[str, User] = {}
        for user in rows:
            found.setdefault(user.external_id or "", user)
        return found

    def _find_user(self, object_id: str) -> User | None:
        return self.s.scalar(
            select(User).where(User.tenant_id == self.tenant.id, User.external_id == object_id,
                               User.purged_at.is_(None))
            .order_by(User.removed_at.is_not(None)).limit(1).with_for_update())

    def _user(self, delta: mapping.UserDelta, known: User | None = None) -> None:
        user = known if known is not None else self._find_user(delta.object_id)
        if delta.removed is not None:
            self._removed(delta, user)
            return
        changes = dict(delta.changes)
        stored = stored_profile(user) if user is not None else None
        if user is not None and user.removed_at is not None:
            self.directory.revive_user(user)
            self.counts["restored"] += 1
        disable = (self.mode != "immediate" and user is not None
                   and changes.get("accountEnabled") is False and user.idp_active is not False)
        if disable:
            changes.pop("accountEnabled")  # staged: applied when the round completes
        fields = mapping.user_fields(delta.object_id, stored, changes)
        if fields is None:
            self.counts["skipped"] += 1  # a new user without a userPrincipalName
            return
        if not self.scope.admits(delta.object_id, fields.user_name):
            if user is not None and user.removed_at is None:
                # It left the scope (its domain changed, or the scope did): like a
                # deletion, staged under the threshold.
                self._remove_or_stage(delta.object_id, "out_of_scope", user)
            else:
                self.counts["out_of_scope"] += 1
            return
        user = self._write(user, fields)
        if disable:
            self.staged.append((delta.object_id, "disable", user.id))
            self.counts["disable_staged"] += 1
        self._seen(1)

    def _removed(self, delta: mapping.UserDelta, user: User | None) -> None:
        """Graph says the user was deleted (`@removed`)."""
        if user is None or user.removed_at is not None:
            self.counts["unchanged"] += 1
            return
        action = "hard_delete" if delta.removed == "deleted" else "soft_delete"
        self._remove_or_stage(delta.object_id, action, user)

    def _write(self, user: User | None, fields: UserFields) -> User:
        """Create the user or change it to `fields`, marked seen by a full round in the
        same write (the INSERT, or the user's UPDATE at the flush)."""
        if user is None:
            user = self.directory.create_user(fields, seen_in_run=self.seen_run)
            self.counts["created"] += 1
            return user
        before = (user.version, user.active)
        self.directory.update_user(user, fields)
        if user.active != before[1]:
            self.counts["enabled" if user.active else "disabled"] += 1
        elif user.version != before[0]:
            self.counts["updated"] += 1
        else:
            self.counts["unchanged"] += 1
        if self.seen_run is not None:
            user.seen_in_run = self.seen_run
        return user

    def _seen(self, users: int) -> None:
        if self.seen_run is not None:
            self.counts["seen"] += users

    def _remove_or_stage(self, object_id: str, action: str, user: User) -> None:
        if self.mode == "immediate":
            self.directory.remove_user(user)
            self.counts["deleted"] += 1
        else:
            self.staged.append((object_id, action, user.id))
            self.counts["delete_staged"] += 1

    def _flush_staged(self) -> None:
        if self.staged and self.mode == "round":
            staging.stage(self.s, self.tenant.id, self.run_id, self.staged)
        self.staged = []

    # -- groups -----------------------------------------------------------------------------

    def _group(self, delta: mapping.GroupDelta) -> None:
        group = self.s.scalar(select(Group).where(Group.tenant_id == self.tenant.id,
                                                  Group.external_id == delta.object_id)
                              .with_for_update())
        if delta.removed is not None:
            if group is not None:
                self.directory.remove_group(group)
                self.counts["groups_deleted"] += 1
            return
        added = self._resolve([oid for oid, _ in delta.added])
        gone = self._resolve(list(delta.removed_members))
        self.counts["members_unknown"] += (len(delta.added) + len(delta.removed_members)
                                           - len(added) - len(gone))
        if group is None:
            name = delta.display_name or delta.object_id
            group = self._create_group(name, delta.object_id)
            self.counts["groups_created"] += 1
        if delta.display_name is not None and delta.display_name != group.display_name:
            self._rename(group, delta.display_name)
        self._change_members(group, added, gone)
        if self.full_round and self.mode == "round":
            self._mark_group_seen(group, added)

    def _change_members(self, group: Group, added: list[str], gone: list[str]) -> None:
        changes: list[MemberChange] = []
        if added:
            changes.append(MemberChange("add", tuple(added)))
        if gone:
            changes.append(MemberChange("remove", tuple(gone)))
        if changes:
            fields = GroupFields(display_name=group.display_name,
                                 external_id=group.external_id, data=dict(group.data or {}))
            self.directory.update_group(group, fields, changes)
            self.counts["memberships"] += len(added) + len(gone)

    def _mark_group_seen(self, group: Group, added: list[str]) -> None:
        """Mark the group, and the memberships the full round listed, seen by it."""
        group.seen_in_run = self.run_id
        self.counts["groups_seen"] += 1
        if added:
            self.s.flush()
            self.s.execute(update(Membership).where(
                Membership.tenant_id == self.tenant.id, Membership.group_id == group.id,
                Membership.member_id.in_(added)).values(seen_in_run=self.run_id))

    def _create_group(self, name: str, object_id: str) -> Group:
        try:
            with self.s.begin_nested():
                return self.directory.create_group(GroupFields(name, object_id))
        except Conflict:
            # Entra allows two groups with one name; the connector does not.
            return self.directory.create_group(GroupFields(f"{name} ({object_id[:8]})",
                                                           object_id))

    def _rename(self, group: Group, name: str) -> None:
        fields = GroupFields(display_name=name, external_id=group.external_id,
                             data=dict(group.data or {}))
        try:
            with self.s.begin_nested():
                self.directory.update_group(group, fields)
        except Conflict:
            self.directory.update_group(group, GroupFields(
                f"{name} ({(group.external_id or '')[:8]})", group.external_id,
                dict(group.data or {})))

    def _resolve(self, object_ids: list[str]) -> list[str]:
        """Connector ids of the live users and groups with these Graph object ids.
        Others (devices, contacts, users out of scope) are not members here."""
        if not object_ids:
            return []
        found = dict(self.s.execute(select(User.external_id, User.id).where(
            User.tenant_id == self.tenant.id, User.external_id.in_(object_ids),
            User.removed_at.is_(None))).all())
        rest = [o for o in object_ids if o not in found]
        if rest:
            found.update(self.s.execute(select(Group.external_id, Group.id).where(
                Group.tenant_id == self.tenant.id, Group.external_id.in_(rest))).all())
        return [found[o] for o in object_ids if o in found]
