"""One Graph delta page applied through the directory, in the caller's transaction.

Applying is an idempotent upsert by Graph object id, so a page applied twice (a round
resumed after a crash) changes nothing the second time. A page is applied the fast way
first (its users looked up together, its new users created with one INSERT per table);
if some item fails, again one item at a time, each in its own savepoint, so that one
bad object never stops the round. An item that fails is kept (`azure_sync.pending`) with
its code and reason and retried at the round's end and in later rounds; it is never
taken for a deletion.

The object id is the identity, the userPrincipalName only a name: a new object whose
name (or mail, or employeeId: the registration's matching attribute) matches a live
account not linked to any object yet adopts that account instead of failing.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from azure_sync import ahead, attribute_maps, mapping, pending, staging
from azure_sync import scope as scoping
from azure_sync.writer import log_event, stored_profile, write_context
from connector import db, limits
from connector.commands import GroupFields, MemberChange, UserFields
from connector.directory import Directory
from connector.errors import Conflict, DomainError
from connector.models import (
    EntraRegistration,
    Group,
    Membership,
    Tenant,
    User,
    UserValue,
)


class NameTaken(Conflict):
    """The userPrincipalName is held by another live user (for now, perhaps: it may be
    renamed or deleted later in the round)."""

    def __init__(self, user_name: str, holder: User | None) -> None:
        held_by = (f"{holder.user_name!r} (object id {holder.external_id})"
                   if holder is not None and holder.external_id
                   else "an account not synced from Entra ID" if holder is not None
                   else "another user")
        super().__init__(f"userPrincipalName {user_name!r} is held by {held_by}; kept "
                         "and retried when the name is free.", "userName")


class MatchConflict(DomainError):
    """A new object matches several existing accounts: adopting one would be a guess."""

    code = "match_ambiguous"


def failure_of(exc: Exception, operation: str) -> pending.Failure:
    """The code and plain-words reason of an item's failure."""
    if isinstance(exc, NameTaken):
        return pending.Failure("name_taken", exc.message, operation)
    if isinstance(exc, MatchConflict):
        return pending.Failure("match_ambiguous", exc.message, "adopt")
    if isinstance(exc, Conflict):
        code = "object_linked" if exc.field == "externalId" else "name_taken"
        return pending.Failure(code, exc.message, operation)
    if isinstance(exc, IntegrityError):
        return pending.Failure("rejected_by_database", "The database refused the change "
                               f"({type(exc.orig).__name__}); kept and retried.", operation)
    if isinstance(exc, MissingName):
        return pending.Failure("missing_user_name", exc.message, "create")
    if isinstance(exc, limits.ValueTooLong):
        return pending.Failure("value_too_long", (
            f"'{exc.attribute}' is {exc.length:,} {exc.unit} long; it may have at most "
            f"{exc.limit:,}. Shorten it in Entra ID: the object is kept and retried when it "
            "changes."), operation)
    message = getattr(exc, "message", None) or type(exc).__name__
    return pending.Failure("rejected", str(message), operation)


class MissingName(DomainError):
    """A new user without a userPrincipalName: nothing to create it under yet."""


def apply_page(s: Session, tenant: Tenant, run_id: int, full_round: bool, phase: str,
               items: list[Any], scope: scoping.Scope, now: dt.datetime,
               round_key: int | None = None, prepared: ahead.PreparedUsers | None = None
               ) -> PageApplier:
    """Apply a round's page in the caller's transaction, as written at `now`: the fast
    way first; if some item fails, again one item at a time. Items kept from earlier
    rounds are merged in; what fails is kept, what applies is no longer. `prepared`:
    the page's users parsed and mapped while the previous page applied."""
    applier = PageApplier(s, tenant, run_id, full_round, now, scope=scope,
                          round_key=round_key)
    page_items = items
    items = applier.with_kept(phase, items)
    if items is page_items:  # nothing laid over a kept item: what was prepared holds
        applier.prepared = prepared
    try:
        with applier.directory.savepoint():
            applier.apply(phase, items, careful=False)
    except (DomainError, IntegrityError):
        applier = PageApplier(s, tenant, run_id, full_round, now, scope=scope,
                              round_key=round_key)
        applier.kept = applier.kept_of(phase, items)
        applier.apply(phase, items, careful=True)
    applier.settle(phase)
    return applier


def uniform_user_updates(s: Session) -> None:
    """On PostgreSQL, give every changed user in the session the same set of columns to
    write.

    The flush sends one UPDATE per run of users (in primary-key order) whose changed
    columns are the same set; a sync page's mix (a new display name here, a new
    userPrincipalName or status there, a new mail only in `data`) made a statement for
    two of three changed users, each a round trip (377 for an incremental round's 600
    attribute changes). Written all with the union of the
    changed columns (the others set to the value they hold), the page's users are one
    executemany: one pipelined round trip. PostgreSQL writes no more index entries for
    it: which indexes an update writes depends on the values that changed, not on the
    columns it sets (and no update of `users` is HOT anyway: `modified_at` is indexed;
    docs/benchmarks.md, "Incremental round: one UPDATE a page"). SQLite rewrites the
    entries of every index on a column it sets, and has no round trips to save: left
    as it is. Users with nothing really changed stay out: nothing is written for them."""
    if s.get_bind().dialect.name != "postgresql":
        return
    changed: list[tuple[User, set[str]]] = []
    columns: set[str] = set()
    for obj in s.dirty:
        if type(obj) is not User:
            continue
        state = inspect(obj)
        now = state.dict
        # What the flush compares too (the column types compare with ==); an attribute
        # set before it was loaded has no old value (NO_VALUE) and counts as changed.
        keys = {key for key, old in state.committed_state.items()
                if key in _USER_COLUMNS and now.get(key) != old}
        if keys:
            changed.append((obj, keys))
            columns |= keys
    if len(changed) < 2:
        return
    for obj, keys in changed:
        loaded = inspect(obj).dict
        for key in columns - keys:
            if key in loaded:  # an expired attribute cannot be flagged: that user alone
                flag_modified(obj, key)


_USER_COLUMNS = frozenset(attr.key for attr in inspect(User).column_attrs
                          if not attr.columns[0].primary_key)


def not_synced(s: Session, tenant_id: str, users: list[dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """The members among `users` (a scope group's page) who are not live users of the
    tenant: they entered the scope."""
    ids = [user["id"] for user in users]
    live = set(s.scalars(select(User.external_id).where(
        User.tenant_id == tenant_id, User.external_id.in_(ids), User.removed_at.is_(None))).all())
    return [user for user in users if user["id"] not in live]


def entered_counts(counts: Counter[str]) -> dict[str, int]:
    """A scope page's counts, with what it created or restored also counted as entering."""
    entered = dict(counts)
    joined = counts.get("created", 0) + counts.get("restored", 0) + counts.get("adopted", 0)
    if joined:
        entered["entered_scope"] = joined
    return entered


class PageApplier:
    """Apply one page's items in the caller's transaction; count what happened."""

    def __init__(self, s: Session, tenant: Tenant, run_id: int, full_round: bool,
                 now: dt.datetime, mode: str = "round",
                 scope: scoping.Scope | None = None, round_key: int | None = None) -> None:
        self.s = s
        self.tenant = tenant
        self.run_id = run_id
        self.now = now
        # Every run of one round (resumed after a failure) shares its key: staged
        # changes and the "seen" marks of a full round are the round's, not the run's.
        self.round_key = round_key if round_key is not None else run_id
        self.full_round = full_round
        # A full round marks every user and group it reads with its round, in the write
        # that creates or changes them; at its end, the synced ones not marked are gone.
        self.seen_run = self.round_key if full_round else None
        # round: destructive changes are staged for the round's end; immediate: applied
        # at once (an admin's "sync this user now"); preview: counted, nothing stored.
        self.mode = mode
        self.directory = Directory(s, tenant, write_context(tenant.id, run_id, now))
        self.counts: Counter[str] = Counter()
        self.staged: list[tuple[str, str, str | None]] = []
        self.registration = s.get(EntraRegistration, tenant.id)
        if scope is None:  # the domains only (no group scope read from Graph)
            scope = scoping.Scope(scoping.settings_of(self.registration).domains)
        self.scope = scope
        self.matching = (self.registration.matching_attribute if self.registration
                         else "userPrincipalName")
        # The tenant's attribute mapping table, which `mapping.user_fields` follows.
        self.rules = attribute_maps.rules_for(s, tenant.id)
        mapping.use_rules(self.rules)
        # Items kept from earlier rounds (object id → item), the objects applied and
        # the ones that failed on this page, and users whose groups are still to read.
        self.kept: dict[str, dict[str, Any]] = {}
        self.applied: list[str] = []
        self.failed: dict[str, tuple[dict[str, Any], pending.Failure]] = {}
        self.joined: list[str] = []
        # Applying after the round's group pages (its end's retries, azure_sync.reapply):
        # a user that lands now missed them, full round or not.
        self.after_groups = False
        self.prepared: ahead.PreparedUsers | None = None

    # -- kept items ---------------------------------------------------------------------

    def kept_of(self, phase: str, items: list[Any]) -> dict[str, dict[str, Any]]:
        if self.mode == "preview":
            return {}
        ids = [item["id"] for item in items
               if isinstance(item, dict) and isinstance(item.get("id"), str)]
        kind = pending.USER if phase == "users" else pending.GROUP
        return pending.items_of(self.s, self.tenant.id, kind, ids) if ids else {}

    def with_kept(self, phase: str, items: list[Any]) -> list[Any]:
        """The page's items, each laid over the item kept for its object, if any."""
        self.kept = self.kept_of(phase, items)
        if not self.kept:
            return items
        return [pending.merged(self.kept.get(item["id"]), item)
                if isinstance(item, dict) and item.get("id") in self.kept else item
                for item in items]

    def settle(self, phase: str) -> None:
        """Keep what failed, forget the kept items that applied now."""
        attribute_maps.settle_managers(self.s, self.directory, self.tenant.id, self.applied)
        if self.mode != "round":
            return
        kind = pending.USER if phase == "users" else pending.GROUP
        done = [oid for oid in self.applied if oid in self.kept]
        if done:
            pending.forget(self.s, self.tenant.id, kind, done)
        for object_id, (item, failure) in self.failed.items():
            pending.remember(self.s, self.tenant.id, kind, object_id, item, failure,
                             self.run_id, self.now)
        for object_id in self.joined:
            pending.remember(self.s, self.tenant.id, pending.GROUPS_DUE, object_id, {},
                             pending.Failure("memberships_due", "Its group memberships "
                                             "are read at the end of the round.", "join"),
                             self.run_id, self.now)
        if self.failed or self.joined or done:
            self.s.flush()

    # -- applying -----------------------------------------------------------------------

    def apply(self, phase: str, items: list[Any], careful: bool) -> None:
        """Apply the page's items; `careful` puts each in its own savepoint so a failing
        one (a userPrincipalName clash…) is kept aside and counted."""
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
                self.applied.append(delta.object_id)
                continue
            try:
                with self.directory.savepoint():
                    apply(delta)  # type: ignore[arg-type]
            except (DomainError, IntegrityError) as exc:
                self._failed(phase, item, delta.object_id, exc)
            else:
                self.applied.append(delta.object_id)
        if phase == "groups" and self.mode == "round":
            self.resolve_waiting_members()
        self._flush_staged()

    def _failed(self, phase: str, item: dict[str, Any], object_id: str,
                exc: Exception) -> None:
        if (phase == "users" and isinstance(exc, Conflict) and exc.field == "userName"
                and not isinstance(exc, NameTaken)):
            exc = self._name_taken(item, exc)
        failure = failure_of(exc, "group" if phase != "users" else
                             "update" if self._synced(object_id) else "create")
        self.failed[object_id] = (item, failure)
        self.counts["failed"] += 1
        log_event(self.tenant.id, self.run_id, "item kept",
                  f"{phase[:-1]} {object_id}: {failure.code}: {failure.reason}")

    def _synced(self, object_id: str) -> bool:
        """Whether a live user is linked to this object (a failed item is an update of
        it, else the creation of a new one, in the provisioning log)."""
        return self.s.scalar(select(User.id).where(
            User.tenant_id == self.tenant.id, User.external_id == object_id,
            User.removed_at.is_(None)).limit(1)) is not None

    def _name_taken(self, item: dict[str, Any], exc: Conflict) -> Conflict:
        """The directory's userName conflict, with the holder named (a failure is rare:
        the lookup is only made then)."""
        name = item.get("userPrincipalName")
        if not isinstance(name, str) or not name:
            return exc
        holder = self.s.scalar(select(User).where(
            User.tenant_id == self.tenant.id, User.removed_at.is_(None),
            User.user_name_norm == name.casefold()).limit(1))
        return NameTaken(name, holder)

    # -- users ------------------------------------------------------------------------------

    def _users_batched(self, items: list[Any]) -> None:
        """The page's users with one lookup for all, and its new users created with one
        INSERT per table: an initial round is nearly all creations."""
        prepared = self.prepared
        if prepared is not None and len(prepared.deltas) != len(items):
            prepared = None
        deltas = []
        for i, item in enumerate(items):
            if prepared is not None:
                parsed = prepared.deltas[i]
                if parsed is None:
                    self.counts["skipped"] += 1
                else:
                    deltas.append(parsed)
                continue
            try:
                deltas.append(mapping.parse_user(item))
            except mapping.MalformedItem:
                self.counts["skipped"] += 1
        ids = [d.object_id for d in deltas]
        if len(set(ids)) != len(ids):  # the same object twice in a page: in order, one by one
            for delta in deltas:
                self._user(delta)
                self.applied.append(delta.object_id)
            self._flush_staged()
            return
        found = self._prefetch(ids)
        by_id = {item["id"]: item for item in items
                 if isinstance(item, dict) and isinstance(item.get("id"), str)}
        creatable = []
        # Renames to a name a live user holds now (a swap, a chain, a re-hire's name)
        # are tried alone; the others, nearly all, the fast way.
        targets = [str(d.changes["userPrincipalName"]) for d in deltas
                   if d.object_id in found and self._renames(found[d.object_id], d)]
        held = self._names_in_use(targets) if targets else set()
        for delta in deltas:
            known = found.get(delta.object_id)
            if known is not None or delta.removed is not None:
                if (known is not None and self._renames(known, delta)
                        and str(delta.changes["userPrincipalName"]).casefold() in held):
                    # A name may be taken for now (a swap, a chain): this one alone in a
                    # savepoint, kept if it fails, the rest of the page the fast way.
                    self._one(by_id[delta.object_id], delta, known)
                else:
                    # Its new name (if any) is not held: `held` says so, and a clash
                    # with another of the page's renames fails the page's savepoint
                    # on the unique index, and the page goes again one by one.
                    self._user(delta, known, names_checked=True)
                    self.applied.append(delta.object_id)
                continue
            fields = (prepared.fields_for(delta, self.rules) if prepared is not None
                      else False)
            if fields is False:
                fields = mapping.user_fields(delta.object_id, None, delta.changes)
            if fields is None:
                raise MissingName("A new user arrived without a userPrincipalName.")
            if not self.scope.admits(delta.object_id, fields.user_name):
                self.counts["out_of_scope"] += 1
                self.applied.append(delta.object_id)
            else:
                creatable.append((delta, fields))
        # The page's renames reach the database before its new users are looked at and
        # inserted (the session does not flush by itself).
        uniform_user_updates(self.s)
        self.s.flush()
        # A new object whose name is taken, or that may adopt an existing account, goes
        # the one-by-one way; the rest (an initial round: everyone) in one INSERT.
        special = self._names_in_use([f.user_name for _, f in creatable])
        special |= self._match_candidates([d for d, _ in creatable])
        new = []
        for delta, fields in creatable:
            if delta.object_id in special or fields.user_name.casefold() in special:
                self._one(by_id[delta.object_id], delta, None)
            else:
                new.append(fields)
                self.applied.append(delta.object_id)
        self.directory.create_users(new, self.seen_run)
        self.counts["created"] += len(new)
        self._seen(len(new))
        self._joined_many([f.external_id for f in new if f.external_id])
        self._flush_staged()

    @staticmethod
    def _renames(user: User, delta: mapping.UserDelta) -> bool:
        name = delta.changes.get("userPrincipalName")
        return isinstance(name, str) and bool(name) and name.casefold() != user.user_name_norm

    def _one(self, item: dict[str, Any], delta: mapping.UserDelta, known: User | None
             ) -> None:
        """One user in its own savepoint; kept (not applied) if it fails."""
        try:
            with self.directory.savepoint():
                self._user(delta, known)
        except (DomainError, IntegrityError) as exc:
            if known is not None:
                self.s.expire(known)  # its attributes as the rollback left them
            self._failed("users", item, delta.object_id, exc)
        else:
            self.applied.append(delta.object_id)

    def _names_in_use(self, names: list[str]) -> set[str]:
        """Which of these userNames (case-folded) live users hold."""
        wanted = sorted({n.casefold() for n in names})
        held: set[str] = set()
        for start in range(0, len(wanted), 1000):
            held.update(self.s.scalars(select(User.user_name_norm).where(
                User.tenant_id == self.tenant.id, User.removed_at.is_(None),
                db.one_of(self.s, User.user_name_norm, wanted[start:start + 1000]))))
        return held

    def _match_candidates(self, deltas: list[mapping.UserDelta]) -> set[str]:
        """The object ids among these new ones that the matching attribute (mail or
        employeeId) may tie to an unlinked account (userPrincipalName: see
        `_names_in_use`)."""
        if self.matching == "userPrincipalName" or not deltas:
            return set()
        by_value: dict[str, str] = {}
        graph_key = "mail" if self.matching == "mail" else "employeeId"
        for delta in deltas:
            value = delta.changes.get(graph_key)
            if isinstance(value, str) and value:
                by_value[value.casefold()] = delta.object_id
        if not by_value:
            return set()
        found = {value for value, _ in self._unlinked_by(list(by_value))}
        return {by_value[v] for v in found}

    def _unlinked_by(self, values: list[str]) -> list[tuple[str, User]]:
        """(value, user) of live accounts linked to no object whose matching attribute
        (case-folded) is one of `values`."""
        unlinked = (User.tenant_id == self.tenant.id, User.removed_at.is_(None),
                    User.external_id.is_(None))
        if self.matching == "userPrincipalName":
            users = self.s.scalars(select(User).where(*unlinked,
                                                      User.user_name_norm.in_(values)))
            return [(u.user_name_norm, u) for u in users]
        if self.matching == "mail":
            self.directory.flush_values()  # the page's changed addresses count too
            rows = self.s.execute(select(UserValue.value_norm, User).join(
                User, (User.tenant_id == UserValue.tenant_id) & (User.id == UserValue.user_id))
                .where(*unlinked, UserValue.tenant_id == self.tenant.id,
                       UserValue.attr == "emails", UserValue.value_norm.in_(values)))
            return [(value or "", user) for value, user in rows]
        wanted = set(values)
        result = []
        for user in self.s.scalars(select(User).where(*unlinked)):
            number = (user.data or {}).get(mapping.ENTERPRISE, {}).get("employeeNumber")
            if isinstance(number, str) and number.casefold() in wanted:
                result.append((number.casefold(), user))
        return result

    def _match(self, delta: mapping.UserDelta, fields: UserFields) -> User | None:
        """The live unlinked account this new object adopts, if its matching attribute
        names exactly one; several: a conflict to report, never a guess."""
        if self.matching == "userPrincipalName":
            value: object = fields.user_name
        else:
            value = delta.changes.get("mail" if self.matching == "mail" else "employeeId")
        if not isinstance(value, str) or not value:
            return None
        matches = {user.id: user for _, user in self._unlinked_by([value.casefold()])}
        if len(matches) > 1:
            raise MatchConflict(f"{len(matches)} existing accounts have {self.matching} "
                                f"{value!r}; none was adopted. Make it unique, then the "
                                "next round links the right one.")
        return next(iter(matches.values()), None)

    def _prefetch(self, object_ids: list[str]) -> dict[str, User]:
        """The page's known users by object id (a live one before a removed one)."""
        if not object_ids:
            return {}
        rows = self.s.scalars(select(User).where(
            User.tenant_id == self.tenant.id, db.one_of(self.s, User.external_id, object_ids),
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

    def _user(self, delta: mapping.UserDelta, known: User | None = None,
              names_checked: bool = False) -> None:
        user = known if known is not None else self._find_user(delta.object_id)
        if delta.removed is not None:
            self._removed(delta, user)
            return
        changes = dict(delta.changes)
        stored = stored_profile(user) if user is not None else None
        fields = mapping.user_fields(delta.object_id, stored, changes)
        if fields is None:
            raise MissingName("A new user arrived without a userPrincipalName; kept until "
                              "Graph sends one.")
        if not self.scope.admits(delta.object_id, fields.user_name):
            if user is not None and user.removed_at is None:
                # It left the scope (its domain changed, or the scope did): like a
                # deletion, staged under the threshold.
                self._remove_or_stage(delta.object_id, "out_of_scope", user)
            else:
                self.counts["out_of_scope"] += 1
            return
        adopted = False
        if user is None:
            user = self._match(delta, fields)
            if user is not None:
                self.directory.adopt_user(user, delta.object_id)
                self.counts["adopted"] += 1
                adopted = True
                fields = mapping.user_fields(delta.object_id, stored_profile(user), changes)
                assert fields is not None
        self._check_name_free(fields, user)
        if user is not None and user.removed_at is not None:
            self.directory.revive_user(user)
            self.counts["restored"] += 1
            self._joined(delta.object_id)
        disable = (self.mode != "immediate" and user is not None and not adopted
                   and changes.get("accountEnabled") is False and user.idp_active is not False)
        if disable and user is not None:
            changes.pop("accountEnabled")  # staged: applied when the round completes
            fields = mapping.user_fields(delta.object_id, stored_profile(user), changes)
            assert fields is not None
        user = self._write(user, fields, names_checked and not adopted)
        if adopted:
            self._joined(delta.object_id)
        if disable:
            self.staged.append((delta.object_id, "disable", user.id))
            self.counts["disable_staged"] += 1
        self._seen(1)

    def _check_name_free(self, fields: UserFields, user: User | None) -> None:
        """Fail with NameTaken (kept, retried) when another live user holds the name of
        a new user (a rename: the directory checks, and `_failed` names the holder)."""
        if user is not None:
            return
        holder = self.s.scalar(select(User).where(
            User.tenant_id == self.tenant.id, User.removed_at.is_(None),
            User.user_name_norm == fields.user_name.casefold()).limit(1))
        if holder is not None and (user is None or holder.id != user.id):
            raise NameTaken(fields.user_name, holder)

    def _removed(self, delta: mapping.UserDelta, user: User | None) -> None:
        """Graph says the user was deleted (`@removed`)."""
        if user is None or user.removed_at is not None:
            self.counts["unchanged"] += 1
            return
        action = "hard_delete" if delta.removed == "deleted" else "soft_delete"
        self._remove_or_stage(delta.object_id, action, user)

    def _write(self, user: User | None, fields: UserFields, names_checked: bool = False
               ) -> User:
        """Create the user or change it to `fields`, marked seen by a full round in the
        same write (the INSERT, or the user's UPDATE at the flush)."""
        if user is None:
            user = self.directory.create_user(fields, seen_in_run=self.seen_run)
            self.counts["created"] += 1
            self._joined(fields.external_id)
            return user
        before = (user.version, user.active)
        self.directory.update_user(user, fields, names_checked=names_checked)
        if user.active != before[1]:
            self.counts["enabled" if user.active else "disabled"] += 1
        elif user.version != before[0]:
            self.counts["updated"] += 1
        else:
            self.counts["unchanged"] += 1
        if self.seen_run is not None:
            user.seen_in_run = self.seen_run
        return user

    def _joined(self, object_id: str | None) -> None:
        """A user new to the connector in an incremental round is in groups the round's
        /groups/delta may not mention: read them at the round's end. So is one that
        lands at any round's end (a re-hire whose name the staged deletions freed): a
        full round's group pages came before it, and their memberships of it were
        dropped as unknown."""
        if object_id and (not self.full_round or self.after_groups) and self.mode == "round":
            self.joined.append(object_id)

    def _joined_many(self, object_ids: list[str]) -> None:
        for object_id in object_ids:
            self._joined(object_id)

    def _seen(self, users: int) -> None:
        if self.seen_run is not None:
            self.counts["seen"] += users

    def _remove_or_stage(self, object_id: str, action: str, user: User) -> None:
        if self.mode == "immediate":
            staging.remove_or_disable(self.directory, user, action,
                                      staging.soft_delete_of(self.registration))
            self.counts["deleted"] += 1
        else:
            self.staged.append((object_id, action, user.id))
            self.counts["delete_staged"] += 1

    def _flush_staged(self) -> None:
        if self.staged and self.mode == "round":
            staging.stage(self.s, self.tenant.id, self.round_key, self.staged)
        self.staged = []

    # -- groups -----------------------------------------------------------------------------

    def _group(self, delta: mapping.GroupDelta) -> None:
        group = self.s.scalar(select(Group).where(Group.tenant_id == self.tenant.id,
                                                  Group.external_id == delta.object_id)
                              .with_for_update())
        if delta.removed is not None:
            if self.mode == "round":
                pending.stop_waiting(self.s, self.tenant.id, delta.object_id)
            if group is not None:
                self.directory.remove_group(group)
                self.counts["groups_deleted"] += 1
            return
        found = self._resolve_ids([oid for oid, _ in delta.added])
        added = [found[oid] for oid, _ in delta.added if oid in found]
        gone = self._resolve(list(delta.removed_members))
        # A nested group this round (or a later one) has not created yet: its
        # membership waits for it, whatever order the groups arrive in.
        later = [oid for oid, kind in delta.added if oid not in found and kind == "Group"]
        if self.mode == "round":
            if later:
                pending.wait_for_members(self.s, self.tenant.id, delta.object_id, later)
                self.counts["members_waiting"] += len(later)
            if delta.removed_members:
                pending.stop_waiting(self.s, self.tenant.id, delta.object_id,
                                     delta.removed_members)
        self.counts["members_unknown"] += (len(delta.added) - len(added) - len(later)
                                           + len(delta.removed_members) - len(gone))
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
        group.seen_in_run = self.round_key
        self.counts["groups_seen"] += 1
        if added:
            self.s.flush()
            self.s.execute(update(Membership).where(
                Membership.tenant_id == self.tenant.id, Membership.group_id == group.id,
                db.one_of(self.s, Membership.member_id, added)).values(
                    seen_in_run=self.round_key))

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
        found = self._resolve_ids(object_ids)
        return [found[o] for o in object_ids if o in found]

    def _resolve_ids(self, object_ids: list[str]) -> dict[str, str]:
        if not object_ids:
            return {}
        found: dict[str, str] = {}
        for start in range(0, len(object_ids), 1000):
            chunk = object_ids[start:start + 1000]
            found.update((oid or "", uid) for oid, uid in self.s.execute(
                select(User.external_id, User.id).where(
                    User.tenant_id == self.tenant.id, db.one_of(self.s, User.external_id, chunk),
                    User.removed_at.is_(None))))
        rest = [o for o in object_ids if o not in found]
        for start in range(0, len(rest), 1000):
            found.update((oid or "", gid) for oid, gid in self.s.execute(
                select(Group.external_id, Group.id).where(
                    Group.tenant_id == self.tenant.id,
                    db.one_of(self.s, Group.external_id, rest[start:start + 1000]))))
        return found

    def resolve_waiting_members(self) -> None:
        """Add the memberships that waited for a group now known (nested groups that
        arrived after their parent). A full round marks them seen, as listed."""
        waiting = pending.members_waiting(self.s, self.tenant.id)
        if not waiting:
            return
        members = self._resolve_ids(sorted({m for ms in waiting.values() for m in ms}))
        groups = self._resolve_ids(list(waiting))
        found: list[tuple[str, str]] = []
        for group_oid, member_oids in waiting.items():
            ready = [members[m] for m in member_oids if m in members]
            group = (self.s.get(Group, (self.tenant.id, groups[group_oid]))
                     if group_oid in groups else None)
            if group is None or not ready:
                continue
            self._change_members(group, ready, [])
            if self.full_round and self.mode == "round":
                self.s.flush()
                self.s.execute(update(Membership).where(
                    Membership.tenant_id == self.tenant.id, Membership.group_id == group.id,
                    Membership.member_id.in_(ready)).values(seen_in_run=self.round_key))
            found.extend((group_oid, m) for m in member_oids if m in members)
        if found:
            pending.members_found(self.s, self.tenant.id, found)
            self.counts["members_resolved"] += len(found)
