"""The directory service: the one write path for users, groups, memberships and modules.

SCIM requests, Graph delta pages and admin actions translate themselves into calls
here. Each call asks the pure status rules (`connector.status`), writes the state rows
and their events in the caller's transaction, and returns what changed. No other code
writes these tables, so the event log always replays to the current state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import operator
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import JSON, bindparam, delete, func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from connector import counters, db, events, limits, provlog, search_words, user_extras
from connector.commands import (
    Correction,
    ExpectedVersion,
    GroupFields,
    IndexedValue,
    MemberChange,
    UserFields,
)
from connector.errors import (
    Conflict,
    InvalidReference,
    InvalidSetting,
    NotFound,
    ProvisioningPaused,
    StateConflict,
    StatusChangeRefused,
    UnknownModule,
    VersionMismatch,
    WrongProvisioningPath,
)
from connector.events import WriteContext
from connector.ids import new_id
from connector.models import (
    Event,
    Group,
    GroupModule,
    Membership,
    ProvisioningEntry,
    Tenant,
    User,
    UserModule,
    UserSearchWord,
    UserValue,
)
from connector.status import (
    IDP_SOURCES,
    Source,
    StatusState,
    admin_may_set_status,
    admin_sets,
    idp_reports,
    initial_state,
    source_switched,
)
from connector.tenants import module_catalogue, policy_of


def _live_user_with(column: Any) -> Any:
    """Statement (built once) for "another live user of this tenant has this value"."""
    return (select(User.id)
            .where(User.tenant_id == bindparam("tenant_id"), User.removed_at.is_(None),
                   User.id != bindparam("own_id"), column == bindparam(column.key))
            .limit(1))


_USERS, _VALUES, _USER_MODULES = User.__table__, UserValue.__table__, UserModule.__table__
_WORDS = UserSearchWord.__table__
_USER_UPDATES: dict[tuple[str, ...], Any] = {}  # UPDATE users by changed columns
_USER_NAME_TAKEN = _live_user_with(User.user_name_norm)
_EXTERNAL_ID_TAKEN = _live_user_with(User.external_id)


def _lists(data: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (data or {}).items() if isinstance(v, list)}


def _user_conflict(exc: IntegrityError, fields: UserFields) -> Exception:
    """Which unique user attribute an INSERT/UPDATE collided on, as a Conflict."""
    text = str(exc.orig).lower()
    diag = getattr(exc.orig, "diag", None)
    constraint = (getattr(diag, "constraint_name", None) or "").lower()
    if "external_id" in constraint or "users.external_id" in text:
        return Conflict(f"externalId {fields.external_id!r} is already in use.", "externalId")
    if "user_name" in constraint or "users.user_name_norm" in text:
        return Conflict(f"userName {fields.user_name!r} is already in use.", "userName")
    return exc  # not a uniqueness question: let it surface as it is


def value_rows(tenant_id: str, user_id: str, values: Iterable[IndexedValue]
               ) -> list[dict[str, Any]]:
    """A user's rows in user_values (its multi-valued attributes, indexed for filters)."""
    return [{"tenant_id": tenant_id, "user_id": user_id, "attr": v.attr,
             "position": v.position, "value": v.value,
             "value_norm": v.value.casefold() if v.value is not None else None,
             "type": v.type, "primary": v.primary, "display": v.display, "data": v.data}
            for v in values]


@functools.cache
def _content_of(table: Any) -> Any:
    """A row's content as a comparable value, every column of `table`: a row read from
    it (a mapping) and one to write (a dict) are the same row when their contents are
    equal. JSON as the text it is written as: the same values, of the same types, in the
    same order (Python's == takes 1 for true, and {"a": 1, "b": 2} for {"b": 2, "a": 1})."""
    plain = operator.itemgetter(*(c.key for c in table.columns if not isinstance(c.type, JSON)))
    json_keys = [c.key for c in table.columns if isinstance(c.type, JSON)]
    if not json_keys:
        return plain
    return lambda row: (plain(row), *[db.json_text(row[k]) for k in json_keys])


def _frontline_value(fields: UserFields) -> dict[str, Any]:
    # Only users with frontline attributes carry them in their creation event.
    return {"frontline": fields.frontline} if fields.frontline else {}


def _emits_events(method: Any) -> Any:
    """Events a directory call records go out together, in order, when it returns (one
    INSERT instead of one per event); a call that fails writes none of them."""

    @functools.wraps(method)
    def wrapper(self: Directory, *args: Any, **kwargs: Any) -> Any:
        outer = self._pending is None
        if outer:
            self._pending = []
        self._depth += 1
        try:
            result = method(self, *args, **kwargs)
            if outer:
                self._write_pending()
            return result
        finally:
            self._depth -= 1
            if outer:
                self._pending = None

    return wrapper


class Directory:
    """Apply writes for one tenant, one writer, one transaction (the caller's session)."""

    def __init__(self, session: Session, tenant: Tenant, ctx: WriteContext, retry_after: int = 300):
        self.session = session
        self.tenant = tenant
        self.ctx = ctx
        self.policy = policy_of(tenant)
        self.retry_after = retry_after
        self._pending: list[dict[str, Any]] | None = None
        self._depth = 0  # public calls (and batched_events blocks) under way
        # For the provisioning log, what the events do not say: (externalId, name) of
        # the users created and not yet in the session, and profile attributes changed.
        self._objects: dict[str, tuple[str | None, str | None]] = {}
        self._profile: list[tuple[str, dict[str, Any]]] = []
        # Inside batched_events (a sync page): users' new search words, written together
        # when the block ends (user id, words; the last one of a user wins).
        self._words: list[tuple[str, list[str]]] | None = None
        # Likewise their indexed values, rewritten when a list attribute changed (user id,
        # rows): one read, one DELETE and one INSERT of the rows that changed for the
        # page instead of statements per user. Read back in the block only by
        # `flush_values`' callers (the sync's matching by mail).
        self._values: list[tuple[str, list[dict[str, Any]]]] | None = None
        # While a back-dated correction applies: its instant and reason, for its events.
        self._correcting: tuple[dt.datetime, str] | None = None

    @contextlib.contextmanager
    def batched_events(self) -> Iterator[None]:
        """Write the events of every call made inside as one statement at the end (a
        sync page's hundreds of changes: one INSERT, or COPY, instead of one each)."""
        outer = self._pending is None
        if outer:
            self._pending = []
            self._words = []
            self._values = []
        self._depth += 1
        try:
            yield
            if outer:
                self.flush_values()
                self._write_words(self._words or [])
                self._record(self._pending or [])
        finally:
            self._depth -= 1
            if outer:
                self._pending = None
                self._words = None
                self._values = None

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint whose rollback also drops the events its calls queued in a
        `batched_events` block (they describe changes that never happened)."""
        mark = len(self._pending) if self._pending is not None else None
        profile_mark = len(self._profile)
        words_mark = len(self._words) if self._words is not None else None
        values_mark = len(self._values) if self._values is not None else None
        try:
            with self.session.begin_nested():
                yield
        except BaseException:
            if mark is not None and self._pending is not None:
                del self._pending[mark:]
            if words_mark is not None and self._words is not None:
                del self._words[words_mark:]
            if values_mark is not None and self._values is not None:
                del self._values[values_mark:]
            del self._profile[profile_mark:]
            raise

    def _log_rows(self, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The provisioning log's entries for these events (none for admin writes),
        taken off the buffers: they go out with the events."""
        if provlog.logged_source(self.ctx) is None:
            self._objects.clear()
            self._profile.clear()
            return []
        extra: dict[str, dict[str, Any]] = {}
        for subject_id, changes in self._profile:
            extra.setdefault(subject_id, {}).update(changes)
        rows = provlog.from_events(self.session, self.ctx, pending, self._objects, extra)
        self._objects.clear()
        self._profile.clear()
        return rows

    def _record(self, pending: list[dict[str, Any]]) -> None:
        """Write events and their provisioning log entries (one statement each)."""
        events.record_many(self.session, pending)
        provlog.record_many(self.session, self._log_rows(pending))

    def _write_pending(self) -> None:
        """Write the outermost call's events; when the call changed one user and nothing
        else, write that user's changed columns with them, in one statement on
        PostgreSQL (a PATCH of `active`: one round trip instead of two, and no unit of
        work), instead of leaving the UPDATE to the flush at commit."""
        pending = self._pending or []
        user = self._only_changed_user() if pending else None
        if user is None:
            self._record(pending)
            return
        state = inspect(user)
        # Only attributes set since the load can have changed (`committed_state` holds
        # their loaded values): their history, not every column's, says which did.
        columns = state.mapper.columns
        changes = {key: history.added[0] for key in list(state.committed_state)
                   if key in columns and (history := state.attrs[key].history).added}
        keys = tuple(sorted(changes))
        statement = _USER_UPDATES.get(keys)
        if statement is None:
            if len(_USER_UPDATES) >= 256:  # sets of changed columns are few; stay bounded
                _USER_UPDATES.clear()
            # The version read too: the user may have been read without a lock (a SCIM
            # PATCH on PostgreSQL, `db.NeedsTransaction`); under one nothing changes it.
            statement = _USER_UPDATES[keys] = (
                update(_USERS)
                .where(_USERS.c.tenant_id == bindparam("u_key_tenant_id"),
                       _USERS.c.id == bindparam("u_key_id"),
                       _USERS.c.version == bindparam("u_key_version"))
                .values({k: bindparam(f"u_{k}", type_=_USERS.c[k].type) for k in keys}))
        params = {f"u_{k}": v for k, v in changes.items()}
        params.update(u_key_tenant_id=user.tenant_id, u_key_id=user.id,
                      u_key_version=state.committed_state.get("version", user.version))
        inserts = [(Event.__table__, pending),
                   (ProvisioningEntry.__table__, self._log_rows(pending))]
        if db.insert_together(self.session, inserts, statement, params,
                              only_if_counted=True) != 1:
            if db.writes_guarded(self.session):  # read without a lock: again, with one
                raise db.NeedsTransaction(f"User {user.id} changed since it was read.")
            raise StaleDataError(f"User {user.id} was removed while it was being changed.")
        # Written: the session holds the user as loaded, so the flush at commit skips it.
        self.session.expunge(user)
        make_transient(user)
        make_transient_to_detached(user)
        self.session.add(user)

    def _only_changed_user(self) -> User | None:
        session = self.session
        if session.new or session.deleted:
            return None
        changed = [row for row in session.dirty if session.is_modified(row)]
        if len(changed) == 1 and type(changed[0]) is User:
            return changed[0]
        return None

    # -- guards ---------------------------------------------------------------

    def ensure_writable(self) -> None:
        """Refuse identity-provider writes while provisioning is paused, and SCIM writes to
        a tenant the Entra poller feeds (one provisioning path per tenant)."""
        if self.ctx.source is Source.SCIM and self.policy.entra_sync:
            raise WrongProvisioningPath(
                "This tenant is provisioned by Entra ID sync (the connector reads Microsoft "
                "Graph); SCIM writes are refused so the two cannot fight. Remove the "
                "tenant's Entra app registration to provision it over SCIM.")
        if self.ctx.source in IDP_SOURCES and self.policy.provisioning_paused:
            raise ProvisioningPaused(self.retry_after)

    def _check_version(self, current: int, expected: ExpectedVersion) -> None:
        """Refuse unless `expected` is None (no condition), `current`, or a set of
        versions holding it (an If-Match list matches when any of its tags does)."""
        if expected is None or current in ({expected} if isinstance(expected, int)
                                           else expected):
            return
        asked = [expected] if isinstance(expected, int) else sorted(expected)
        if len(asked) == 1:
            said = f"The resource changed since version {asked[0]}"
        elif asked:
            said = "The resource changed since versions " + ", ".join(map(str, asked))
        else:
            said = "None of the versions asked for is one this server issued"
        raise VersionMismatch(
            f"{said}: it is at version {current} now. Read it again and send the change "
            "against its current version.")

    # -- users ----------------------------------------------------------------

    @_emits_events
    def create_user(self, fields: UserFields, seen_in_run: int | None = None) -> User:
        """Create one user: its row, index rows, modules, the live-user counter and its
        event are written together (on PostgreSQL as one statement, one round trip).
        `seen_in_run`: the full sync round that read the user (its sweep spares it)."""
        self.ensure_writable()
        limits.check_user(fields)
        state = initial_state(self.policy, self.ctx.source, fields.active)
        modules = self._known_modules(fields.modules or ())
        row = self._user_row(fields, state, new_id(), seen_in_run)
        self._event(row["id"], events.USER_CREATED, None, {
            "userName": row["user_name"], "active": state.active,
            "idp_active": state.idp_active, "in_deleted_list": state.in_deleted_list,
            "guest": bool(fields.guest),
            "external_company_guest": bool(fields.external_company_guest),
            "admin": bool(fields.admin), "modules": list(modules), **_frontline_value(fields),
        })
        inserts = [(_USERS, [row]), (_VALUES, value_rows(self.tenant.id, row["id"],
                                                         fields.values)),
                   (_WORDS, self._word_rows(row["id"], fields)),
                   (_USER_MODULES, [{"tenant_id": self.tenant.id, "user_id": row["id"],
                                     "module": m} for m in modules])]
        if self._depth == 1:  # the outermost call: its event goes along
            inserts.append((Event.__table__, self._pending or []))
            inserts.append((ProvisioningEntry.__table__, self._log_rows(self._pending or [])))
            self._pending = []
        # The partial unique indexes decide (no read first); their violation names the
        # attribute. The caller rolls back (a /Bulk operation, its savepoint).
        try:
            counted = db.insert_together(self.session, inserts, counters.BUMP,
                                         counters.bump_params(self.tenant.id, +1))
        except IntegrityError as exc:
            raise _user_conflict(exc, fields) from exc
        if not counted:
            counters.recount_live_users(self.session, self.tenant.id)
        # The row is written: the session takes the object as loaded from it, so reads
        # and later changes in this transaction use it without a query or an INSERT.
        user = User(**row)
        make_transient_to_detached(user)
        self.session.add(user)
        user_extras.remember_new_user(self.session, user.id, modules)
        return user

    def _user_row(self, fields: UserFields, state: StatusState, user_id: str,
                  seen_in_run: int | None = None) -> dict[str, Any]:
        now = self.ctx.now
        self._objects[user_id] = (fields.external_id, fields.user_name)
        return {
            "tenant_id": self.tenant.id, "id": user_id, "user_name": fields.user_name,
            "user_name_norm": fields.user_name.casefold(), "external_id": fields.external_id,
            "display_name": fields.display_name,
            "display_name_norm": fields.display_name.casefold() if fields.display_name
            else None,
            "active": state.active, "idp_active": state.idp_active,
            "in_deleted_list": state.in_deleted_list, "guest": bool(fields.guest),
            "external_company_guest": bool(fields.external_company_guest),
            "admin": bool(fields.admin),
            "frontline": fields.frontline or None, "invited_at": None, "claimed_at": None,
            "origin": str(self.ctx.source), "removed_at": None, "purged_at": None,
            "seen_in_run": seen_in_run, "created_at": now, "modified_at": now, "version": 1,
            "data": fields.data}

    def _word_rows(self, user_id: str, fields: UserFields) -> list[dict[str, Any]]:
        return [{"tenant_id": self.tenant.id, "user_id": user_id, "word": w}
                for w in sorted(search_words.profile_words(
                    fields.user_name, fields.display_name, fields.data))]

    @_emits_events
    def create_users(self, many: Sequence[UserFields], seen_in_run: int | None = None
                     ) -> list[str]:
        """Create many users at once (a sync page's new users): the same rules and events
        as `create_user`, written as one INSERT per table instead of a flush per user.
        No modules (identity-provider pages carry none). Returns the new ids in order.
        A taken userName or externalId fails the whole call (IntegrityError): the caller
        rolls back and falls back to `create_user` one by one."""
        self.ensure_writable()
        if not many:
            return []
        users, values, words, ids = [], [], [], []
        for fields in many:
            limits.check_user(fields)
            state = initial_state(self.policy, self.ctx.source, fields.active)
            user_id = new_id()  # time-ordered: see connector/ids.py
            ids.append(user_id)
            users.append(self._user_row(fields, state, user_id, seen_in_run))
            values += value_rows(self.tenant.id, user_id, fields.values)
            words += self._word_rows(user_id, fields)
            self._event(user_id, events.USER_CREATED, None, {
                "userName": fields.user_name, "active": state.active,
                "idp_active": state.idp_active, "in_deleted_list": state.in_deleted_list,
                "guest": bool(fields.guest),
                "external_company_guest": bool(fields.external_company_guest),
                "admin": bool(fields.admin), "modules": [], **_frontline_value(fields)})
        db.insert_many(self.session, User.__table__, users)
        db.insert_many(self.session, UserValue.__table__, values)
        db.insert_many(self.session, _WORDS, words)
        counters.add_live_users(self.session, self.tenant.id, len(users))
        return ids

    @_emits_events
    def update_user(self, user: User, fields: UserFields,
                    expected_version: ExpectedVersion = None,
                    *, names_checked: bool = False) -> User:
        """Replace the user's profile with `fields`; status through the rules.
        `names_checked`: the caller looked up the new userName already (a sync page does
        it for all its renames with one query) and rolls back on the unique indexes'
        IntegrityError, so a rename here does not read again who holds it."""
        self.ensure_writable()
        limits.check_user(fields)
        self._check_version(user.version, expected_version)
        if not names_checked and (fields.user_name.casefold(), fields.external_id) != (
                user.user_name_norm, user.external_id):
            self._check_user_unique(fields, user.id)
        changed = self._update_profile(user, fields)
        changed |= self._update_flags(user, fields)
        if fields.active is not None:
            changed |= self._apply_status(user, fields.active)
        if fields.modules is not None:
            changed |= self._replace_user_modules(user, fields.modules)
        if changed:
            self._touch(user)
        return user

    @_emits_events
    def remove_user(self, user: User, expected_version: ExpectedVersion = None) -> None:
        """Hide the user from directory views; its history stays for billing."""
        self.ensure_writable()
        user_extras.forget_all(self.session)
        self._check_version(user.version, expected_version)
        groups = list(self.session.scalars(
            select(Membership.group_id).where(Membership.tenant_id == self.tenant.id,
                                              Membership.member_id == user.id)))
        for group_id in groups:
            self._event(group_id, events.MEMBER_REMOVED, user.id, None, subject_type="group",
                        object_id=user.id)
        self.session.execute(delete(Membership).where(Membership.tenant_id == self.tenant.id,
                                                      Membership.member_id == user.id))
        # Assignment rows exist for live users only (so "who has module X" needs no
        # look at the users table); the event keeps them, and a restore puts them back.
        modules = list(self.session.scalars(
            delete(UserModule).where(UserModule.tenant_id == self.tenant.id,
                                     UserModule.user_id == user.id)
            .returning(UserModule.module)))
        user.removed_at = self.ctx.now
        self._touch(user)
        self.session.flush()
        counters.add_live_users(self.session, self.tenant.id, -1)
        self._event(user.id, events.USER_REMOVED, None,
                    {"userName": user.user_name, "modules": sorted(modules)})

    # -- admin decisions ---------------------------------------------------------

    def _refuse_unless_admin_may_set(self, user: User, fed_by_entra_sync: bool | None) -> None:
        # Until a tenant-wide Entra registration exists (azure_sync), a user is "fed by
        # Entra sync" when the poller created it.
        fed = (self.policy.entra_sync or user.origin == Source.ENTRA_SYNC
               if fed_by_entra_sync is None else fed_by_entra_sync)
        refusal = admin_may_set_status(self.policy, user.origin, fed)
        if refusal is not None:
            raise StatusChangeRefused(refusal.reason, refusal.setting)

    @_emits_events
    def admin_set_status(self, user: User, active: bool, fed_by_entra_sync: bool | None = None,
                         expected_version: ExpectedVersion = None) -> bool:
        """An admin sets a user's status, if the status rules allow it (else refused with
        the setting to change). Returns whether anything changed."""
        self._check_version(user.version, expected_version)
        if user.removed_at is not None:
            raise NotFound(f"User {user.id} was deleted; restore it first.")
        self._refuse_unless_admin_may_set(user, fed_by_entra_sync)
        before = StatusState(user.active, user.idp_active, user.in_deleted_list)
        if not self._set_state(user, before, admin_sets(before, active)):
            return False
        self._touch(user)
        return True

    @_emits_events
    def restore_user(self, user: User, fed_by_entra_sync: bool | None = None) -> None:
        """Bring a user back from the deleted-users list as active: one the IdP disabled,
        or one it deleted (same id, same history). Refused like a status change, and
        with Conflict if its userName or externalId has been taken meanwhile."""
        if user.purged_at is not None:
            raise NotFound(f"User {user.id} was removed permanently and cannot be restored.")
        if not (user.in_deleted_list or user.removed_at is not None):
            raise StateConflict("This user is not on the deleted-users list.")
        self._refuse_unless_admin_may_set(user, fed_by_entra_sync)
        if user.removed_at is not None:
            self._unremove(user)
        before = StatusState(user.active, user.idp_active, user.in_deleted_list)
        after = StatusState(True, before.idp_active, False)
        self._set_state(user, before, after)
        self._touch(user)

    @_emits_events
    def adopt_user(self, user: User, external_id: str) -> None:
        """Link an existing account (created by an admin, not yet tied to an identity-
        provider object) to the object with `external_id`, which feeds it from now on:
        same id, history and modules (Entra's "matching attribute")."""
        self.ensure_writable()
        if user.external_id is not None or user.removed_at is not None:
            raise Conflict(f"User {user.user_name!r} is already linked to "
                           f"{user.external_id!r}.", "externalId")
        self._check_user_unique(UserFields(user_name=user.user_name,
                                           external_id=external_id), user.id)
        self._event(user.id, events.USER_ADOPTED, {"origin": user.origin},
                    {"externalId": external_id, "origin": str(self.ctx.source)})
        user.external_id = external_id
        user.origin = str(self.ctx.source)
        self._touch(user)

    def hold_names_aside(self, users: Sequence[User]) -> None:
        """Free these users' userNames for the rest of the transaction, so that names
        moving in a ring (A takes B's, B takes A's) can each land: the unique index
        sees a placeholder until each user's own rename writes its new name. No event:
        only the renames that follow are changes."""
        for user in users:
            self.session.execute(update(User).where(
                User.tenant_id == self.tenant.id, User.id == user.id).values(
                user_name_norm=f"\x01moving:{user.id}"))
        for user in users:  # the session must write the real name back at the rename
            set_committed_value(user, "user_name_norm", f"\x01moving:{user.id}")

    @_emits_events
    def revive_user(self, user: User) -> None:
        """The identity provider brings back a user it had deleted (Graph: the same object
        id reappears after a soft delete): same id, same history, its modules back.
        Its status then follows what the provider says, through `update_user`."""
        self.ensure_writable()
        if user.removed_at is None or user.purged_at is not None:
            raise InvalidSetting("Only a removed user that was not removed for good can "
                                 "come back.")
        self._unremove(user)
        self._touch(user)

    def _unremove(self, user: User) -> None:
        fields = UserFields(user_name=user.user_name, external_id=user.external_id)
        self._check_user_unique(fields, user.id)
        user.removed_at = None
        self.session.flush()
        counters.add_live_users(self.session, self.tenant.id, +1)
        modules = self._modules_at_removal(user)
        self.session.add_all(UserModule(tenant_id=self.tenant.id, user_id=user.id,
                                        module=m) for m in modules)
        self._event(user.id, events.USER_RESTORED, None,
                    {"userName": user.user_name, "modules": list(modules)})

    def _modules_at_removal(self, user: User) -> tuple[str, ...]:
        """The modules the user had when it was removed, as far as the catalogue still
        has them (a module dropped from the catalogue meanwhile is not brought back)."""
        removal = self.session.scalar(
            select(Event.new_value).where(Event.tenant_id == self.tenant.id,
                                          Event.subject_id == user.id,
                                          Event.kind == events.USER_REMOVED)
            .order_by(Event.effective_at.desc(), Event.id.desc()).limit(1))
        wanted = removal.get("modules", []) if isinstance(removal, dict) else []
        catalogue = module_catalogue(self.session, self.tenant.id)
        return tuple(sorted({catalogue[m.casefold()] for m in wanted
                             if m.casefold() in catalogue}))

    @_emits_events
    def purge_user(self, user: User, fed_by_entra_sync: bool | None = None) -> None:
        """Remove a user on the deleted-users list for good: it leaves the list and can
        no longer be restored; its row and events stay for billing. One the IdP still
        holds (disabled, not deleted) falls under the status rules, since the IdP may
        enable it again."""
        if user.purged_at is not None:
            raise NotFound(f"User {user.id} was already removed permanently.")
        if not (user.in_deleted_list or user.removed_at is not None):
            raise StateConflict("Only users on the deleted-users list can be removed "
                                "permanently; deactivate the user first.")
        if user.removed_at is None:
            self._refuse_unless_admin_may_set(user, fed_by_entra_sync)
            self.remove_user(user)
        user.purged_at = self.ctx.now
        self._touch(user)
        self._event(user.id, events.USER_PURGED, None, {"userName": user.user_name})

    @_emits_events
    def set_user_flags(self, user: User, guest: bool | None = None, admin: bool | None = None,
                       external_company_guest: bool | None = None) -> bool:
        """An admin marks a user guest, external-company guest or admin (or not); None
        leaves a flag as it is. Returns whether anything changed."""
        if user.removed_at is not None:
            raise NotFound(f"User {user.id} was deleted.")
        changed = False
        for attr, kind, value in (("guest", events.USER_GUEST, guest),
                                  ("external_company_guest", events.USER_EXTERNAL_GUEST,
                                   external_company_guest),
                                  ("admin", events.USER_ADMIN, admin)):
            if value is not None and getattr(user, attr) != value:
                self._event(user.id, kind, getattr(user, attr), value)
                setattr(user, attr, value)
                changed = True
        if changed:
            self._touch(user)
        return changed

    @_emits_events
    def invite_user(self, user: User) -> bool:
        """Invite a user to claim its account (what the `invited` billing policy counts).
        Returns whether anything changed: inviting twice is one invitation."""
        if user.removed_at is not None:
            raise NotFound(f"User {user.id} was deleted.")
        if user.invited_at is not None:
            return False
        user.invited_at = self.ctx.now
        self._event(user.id, events.USER_INVITED, False, True)
        self._touch(user)
        return True

    @_emits_events
    def claim_user(self, user: User) -> bool:
        """Record that a user claimed its account; claiming implies the invitation."""
        if user.removed_at is not None:
            raise NotFound(f"User {user.id} was deleted.")
        if user.claimed_at is not None:
            return False
        self.invite_user(user)
        user.claimed_at = self.ctx.now
        self._event(user.id, events.USER_CLAIMED, False, True)
        self._touch(user)
        return True

    @_emits_events
    def set_user_frontline(self, user: User, attributes: dict[str, Any]) -> bool:
        """An admin sets the frontline plan's attributes of a user."""
        if user.removed_at is not None:
            raise NotFound(f"User {user.id} was deleted.")
        if attributes == (user.frontline or {}):
            return False
        self._event(user.id, events.USER_FRONTLINE, user.frontline or {}, attributes)
        user.frontline = attributes or None
        self._touch(user)
        return True

    @_emits_events
    def correct_user(self, user: User, correction: Correction) -> bool:
        """Record what held for the user from `correction.effective_at` (in the past) on,
        with its reason: events that took effect then, recorded now. Billing folds them
        in their place; a closed month never changes (the next close adjusts it).

        When nothing later in the history has the last word on the same thing, the
        current state follows too (a status change then under the status rules, like an
        admin's). Returns whether it did; StateConflict when the history already says
        so at that instant."""
        if user.purged_at is not None:
            raise NotFound(f"User {user.id} was removed permanently; its history is "
                           "closed to corrections.")
        at = correction.effective_at
        wanted = self._corrected_value(correction)
        history = self.session.execute(
            select(Event.kind, Event.new_value, Event.effective_at)
            .where(Event.tenant_id == self.tenant.id, Event.subject_type == "user",
                   Event.subject_id == user.id,
                   Event.kind.in_(_CORRECTED_BY[correction.kind]))
            .order_by(Event.effective_at, Event.id)).all()
        before = [(kind, new) for kind, new, when in history if when <= at]
        if not before:
            raise InvalidSetting(f"The user did not exist yet at {at.isoformat()}; a "
                                 "correction takes effect after its creation.", "effectiveAt")
        then = _held_after(correction.kind, *before[-1])
        if then == wanted:
            raise StateConflict(f"Nothing to correct: at {at.isoformat()} the history "
                                f"already says {_said(correction.kind, then)}.")
        latest = not any(when > at for _, _, when in history)
        self._correcting = (at, correction.reason)
        try:
            if latest and self._apply_correction(user, correction.kind, wanted):
                self._touch(user)
                return True
            if correction.kind == "deletion":  # as a removal's event says it
                self._event(user.id, events.USER_REMOVED, None,
                            {"userName": user.user_name, "modules": []})
            else:
                self._event(user.id, _CORRECTION_EVENT[correction.kind], then, wanted)
            return False
        finally:
            self._correcting = None

    def _corrected_value(self, correction: Correction) -> Any:
        """The correction's value as the events store it."""
        if correction.kind == "modules":
            return list(self._known_modules(correction.value))
        if correction.kind == "deletion":
            return False  # the aspect is "exists"
        if correction.kind == "frontline":
            return dict(correction.value or {})
        return bool(correction.value)

    def _apply_correction(self, user: User, kind: str, wanted: Any) -> bool:
        """Make the current state say `wanted` (the correction is the last word), its
        events stamped with the correction. False: only the history takes it (a
        deleted user's modules live in its removal event)."""
        if kind == "status":
            if user.removed_at is None:
                self._refuse_unless_admin_may_set(user, None)
            before = StatusState(user.active, user.idp_active, user.in_deleted_list)
            return self._set_state(user, before, admin_sets(before, wanted))
        if kind == "deletion":
            self._refuse_unless_admin_may_set(user, None)  # as a status change
            self.remove_user(user)
            user.removed_at = self._correcting[0] if self._correcting else self.ctx.now
            return True
        if kind == "modules":
            return user.removed_at is None and self._replace_user_modules(user, wanted)
        if kind == "frontline":
            self._event(user.id, events.USER_FRONTLINE, user.frontline or {}, wanted)
            user.frontline = wanted or None
            return True
        self._event(user.id, _CORRECTION_EVENT[kind], getattr(user, kind), wanted)
        setattr(user, kind, wanted)
        return True

    @_emits_events
    def set_user_modules(self, user: User, modules: Sequence[str]) -> bool:
        if user.removed_at is not None:
            raise NotFound(f"User {user.id} was deleted.")
        for module in modules:
            limits.check("modules", module, limits.MODULE)
        changed = self._replace_user_modules(user, modules)
        if changed:
            self._touch(user)
        return changed

    @_emits_events
    def set_group_modules(self, group: Group, modules: Sequence[str]) -> bool:
        user_extras.forget_all(self.session)  # members' effective modules change
        changed = self._replace_group_modules(group, modules)
        if changed:
            self._touch(group)
        return changed

    @_emits_events
    def reapply_idp_status(self) -> int:
        """After the status source went back to the identity provider: every live user
        whose status differs from the IdP's latest word gets that word. Returns how many."""
        mismatched = self.session.scalars(
            select(User).where(User.tenant_id == self.tenant.id, User.removed_at.is_(None),
                               User.idp_active.is_not(None))
            .where((User.active != User.idp_active)
                   | (User.in_deleted_list == User.idp_active))
            .order_by(User.id))
        changed = 0
        for user in mismatched:
            before = StatusState(user.active, user.idp_active, user.in_deleted_list)
            if self._set_state(user, before, source_switched(self.policy, before)):
                self._touch(user)
                changed += 1
        return changed

    def _set_state(self, user: User, before: StatusState, after: StatusState) -> bool:
        """Write a status transition and its events; False when nothing changes."""
        if after == before:
            return False
        if after.active != before.active:
            self._event(user.id, events.USER_STATUS, before.active, after.active)
        elif after.idp_active != before.idp_active:
            self._event(user.id, events.USER_IDP_STATUS, before.idp_active, after.idp_active)
        if after.in_deleted_list != before.in_deleted_list:
            self._event(user.id, events.USER_DELETED_LIST, before.in_deleted_list,
                        after.in_deleted_list)
        user.active, user.idp_active = after.active, after.idp_active
        user.in_deleted_list = after.in_deleted_list
        return True

    def _update_profile(self, user: User, fields: UserFields) -> bool:
        before = {"userName": user.user_name, "externalId": user.external_id,
                  "displayName": user.display_name}
        after = {"userName": fields.user_name, "externalId": fields.external_id,
                 "displayName": fields.display_name}
        old_values = (user.data, before)
        self._rewrite_words(user, fields)
        user.user_name = fields.user_name
        user.user_name_norm = fields.user_name.casefold()
        user.external_id = fields.external_id
        user.display_name = fields.display_name
        user.display_name_norm = fields.display_name.casefold() if fields.display_name else None
        changed = old_values != (fields.data, after)
        if before != after:
            diff_old = {k: v for k, v in before.items() if after[k] != v}
            self._event(user.id, events.USER_PROFILE, diff_old, {k: after[k] for k in diff_old})
        if user.data != fields.data:
            if self._pending is not None and provlog.logged_source(self.ctx) is not None:
                self._profile.append((user.id, provlog.profile_changes(user.data,
                                                                       fields.data)))
            # The index rows derive from the profile's multi-valued (list) attributes:
            # when none of those changed (a new display name, a surname), they stand.
            if _lists(user.data) != _lists(fields.data):
                self._write_values(user, fields.values)
            user.data = fields.data
        return changed

    def _rewrite_words(self, user: User, fields: UserFields) -> None:
        """Replace the user's search words when its names or e-mail addresses changed."""
        before = search_words.profile_sources(user.user_name, user.display_name,
                                              user.data or {})
        after = search_words.profile_sources(fields.user_name, fields.display_name,
                                             fields.data)
        if before == after:  # the common update: a status, a title, a phone
            return
        old, new = search_words.user_words(*before), search_words.user_words(*after)
        if old == new:
            return
        if self._words is not None:  # a sync page: with the page's others, at its end
            self._words.append((user.id, sorted(new)))
        else:
            self._write_words([(user.id, sorted(new))])

    def _write_words(self, rewritten: list[tuple[str, list[str]]]) -> None:
        """Bring these users' search words to the new ones (a user rewritten twice on a
        page: its last words), writing only the difference (`_write_difference`).
        Core statements, run at once: a second rename in the transaction sees the first."""
        self._write_difference(_WORDS, {
            user_id: [{"tenant_id": self.tenant.id, "user_id": user_id, "word": w}
                      for w in words]
            for user_id, words in rewritten})

    def _write_difference(self, table: Any, latest: dict[str, list[dict[str, Any]]]) -> None:
        """Make `latest` (user id: all its rows) these users' rows of `table` (their
        search words, their indexed values), writing only the difference with what is
        STORED: one SELECT per 1,000 users reads their rows, then one statement deletes
        the stored rows not among the new ones (a key gone, or its content changed)
        and one inserts the new rows not stored as they are. Identical rows stay.

        Against the stored rows, not the rows the old profile would give: rows an older
        folding (or anything else) wrote go too. A rename changes a few of a user's
        words and a new mail one of its values: deleting and inserting all of them again
        was the largest part of an incremental Entra round's database time on PostgreSQL
        (1,000 changes: the COPY into user_search_words alone about 110 ms of 440)."""
        if not latest:
            return
        ids = sorted(latest)
        key_columns = [c.key for c in table.primary_key.columns]
        content = _content_of(table)
        gone: list[dict[str, Any]] = []
        new: list[dict[str, Any]] = []
        connection = self.session.connection()  # Core: the ORM's execute path adds nothing
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            stored: dict[str, dict[tuple[Any, ...], Any]] = {}
            for row in connection.execute(select(table).where(
                    table.c.tenant_id == self.tenant.id,
                    db.one_of(self.session, table.c.user_id, chunk))).mappings().all():
                stored.setdefault(row["user_id"], {})[content(row)] = row
            for user_id in chunk:
                have = stored.get(user_id, {})
                wanted = {content(row): row for row in latest[user_id]}
                gone += [{k: row[k] for k in key_columns}
                         for seen, row in have.items() if seen not in wanted]
                new += [row for seen, row in wanted.items() if seen not in have]
        db.delete_many(self.session, table, gone)  # first: a changed row keeps its key
        db.insert_many(self.session, table, new)

    def _update_flags(self, user: User, fields: UserFields) -> bool:
        changed = False
        for attr, kind in (("guest", events.USER_GUEST),
                           ("external_company_guest", events.USER_EXTERNAL_GUEST),
                           ("admin", events.USER_ADMIN)):
            old, new = getattr(user, attr), getattr(fields, attr)
            if new is not None and old != new:
                setattr(user, attr, new)
                self._event(user.id, kind, old, new)
                changed = True
        if fields.frontline is not None and fields.frontline != (user.frontline or {}):
            self._event(user.id, events.USER_FRONTLINE, user.frontline or {}, fields.frontline)
            user.frontline = fields.frontline or None
            changed = True
        return changed

    def _apply_status(self, user: User, said_active: bool) -> bool:
        before = StatusState(user.active, user.idp_active, user.in_deleted_list)
        if self.ctx.source in IDP_SOURCES:
            after = idp_reports(self.policy, before, said_active)
        else:
            after = StatusState(said_active, before.idp_active, before.in_deleted_list)
        return self._set_state(user, before, after)

    def _replace_user_modules(self, user: User, wanted: Sequence[str]) -> bool:
        modules = self._known_modules(wanted)
        self.session.flush()  # assignments added earlier in this transaction count
        current = tuple(sorted(self.session.scalars(
            select(UserModule.module).where(UserModule.tenant_id == self.tenant.id,
                                            UserModule.user_id == user.id))))
        if current == modules:
            return False
        self.session.execute(delete(UserModule).where(UserModule.tenant_id == self.tenant.id,
                                                      UserModule.user_id == user.id))
        self.session.add_all(
            UserModule(tenant_id=self.tenant.id, user_id=user.id, module=m) for m in modules)
        self._event(user.id, events.USER_MODULES, list(current), list(modules))
        user_extras.modules_changed(self.session, user.id, modules)
        return True

    def _write_values(self, user: User, values: Iterable[IndexedValue]) -> None:
        """Replace the user's indexed values (only the rows that changed: see
        `_write_difference`): at once, or with the sync page's others at the end of its
        `batched_events` block."""
        rows = value_rows(self.tenant.id, user.id, values)
        if self._values is not None:
            self._values.append((user.id, rows))
            return
        self._write_difference(_VALUES, {user.id: rows})

    def flush_values(self) -> None:
        """Write the indexed values queued in a `batched_events` block so far (the last
        ones queued for a user; only the rows that changed, for all of them together:
        `_write_difference`), before a lookup that reads them."""
        if not self._values:
            return
        latest = dict(self._values)
        self._values.clear()
        self._write_difference(_VALUES, latest)

    def _check_user_unique(self, fields: UserFields, own_id: str | None) -> None:
        """409 with the attribute's name; the partial unique indexes back this up against
        a concurrent writer (its IntegrityError also becomes a 409)."""
        params = {"tenant_id": self.tenant.id, "own_id": own_id or "",
                  "user_name_norm": fields.user_name.casefold(),
                  "external_id": fields.external_id}
        if self.session.scalar(_USER_NAME_TAKEN, params):
            raise Conflict(f"userName {fields.user_name!r} is already in use.", "userName")
        if fields.external_id is not None and self.session.scalar(_EXTERNAL_ID_TAKEN, params):
            raise Conflict(f"externalId {fields.external_id!r} is already in use.", "externalId")

    # -- groups ---------------------------------------------------------------

    @_emits_events
    def create_group(self, fields: GroupFields, members: Sequence[str] = ()) -> Group:
        self.ensure_writable()
        limits.check_group(fields)
        user_extras.forget_all(self.session)
        self._check_group_unique(fields, None)
        modules = self._known_modules(fields.modules or ())
        now = self.ctx.now
        group = Group(tenant_id=self.tenant.id, id=str(uuid.uuid4()), origin=str(self.ctx.source),
                      created_at=now, modified_at=now, version=1)
        self._assign_group(group, fields)
        self.session.add(group)
        self.session.flush()
        self._event(group.id, events.GROUP_CREATED, None,
                    {"displayName": group.display_name, "modules": list(modules)},
                    subject_type="group")
        self.session.add_all(
            GroupModule(tenant_id=self.tenant.id, group_id=group.id, module=m) for m in modules)
        self._add_members(group, members)
        self._note(group)
        return group

    @_emits_events
    def update_group(self, group: Group, fields: GroupFields,
                     members: Sequence[MemberChange] = (), expected_version: ExpectedVersion = None
                     ) -> Group:
        self.ensure_writable()
        limits.check_group(fields)
        user_extras.forget_all(self.session)
        self._check_version(group.version, expected_version)
        if (fields.display_name.casefold(), fields.external_id) != (group.display_name_norm,
                                                                    group.external_id):
            self._check_group_unique(fields, group.id)
        changed = False
        if group.display_name != fields.display_name:
            self._event(group.id, events.GROUP_RENAMED, group.display_name, fields.display_name,
                        subject_type="group")
            changed = True
        if (group.external_id, group.data) != (fields.external_id, fields.data):
            changed = True
        self._assign_group(group, fields)
        if fields.modules is not None:
            changed |= self._replace_group_modules(group, fields.modules)
        for change in members:
            changed |= self._apply_member_change(group, change)
        if changed:
            self._touch(group)
        return group

    @_emits_events
    def remove_group(self, group: Group, expected_version: ExpectedVersion = None) -> None:
        self.ensure_writable()
        user_extras.forget_all(self.session)
        self._check_version(group.version, expected_version)
        self._note(group)
        self._remove_members(group, self._member_ids(group))
        self._event(group.id, events.GROUP_REMOVED, {"displayName": group.display_name}, None,
                    subject_type="group")
        self.session.execute(delete(GroupModule).where(GroupModule.tenant_id == self.tenant.id,
                                                       GroupModule.group_id == group.id))
        self.session.delete(group)

    def _assign_group(self, group: Group, fields: GroupFields) -> None:
        group.display_name = fields.display_name
        group.display_name_norm = fields.display_name.casefold()
        group.external_id = fields.external_id
        group.data = fields.data

    def _check_group_unique(self, fields: GroupFields, own_id: str | None) -> None:
        where = [Group.tenant_id == self.tenant.id,
                 Group.display_name_norm == fields.display_name.casefold()]
        if own_id is not None:
            where.append(Group.id != own_id)
        if self.session.scalar(select(func.count()).select_from(Group).where(*where)):
            raise Conflict(f"displayName {fields.display_name!r} is already in use.",
                           "displayName")
        if fields.external_id is None:
            return
        where = [Group.tenant_id == self.tenant.id, Group.external_id == fields.external_id]
        if own_id is not None:
            where.append(Group.id != own_id)
        if self.session.scalar(select(func.count()).select_from(Group).where(*where)):
            raise Conflict(f"externalId {fields.external_id!r} is already in use.", "externalId")

    def _replace_group_modules(self, group: Group, wanted: Sequence[str]) -> bool:
        modules = self._known_modules(wanted)
        self.session.flush()  # assignments added earlier in this transaction count
        current = tuple(sorted(self.session.scalars(
            select(GroupModule.module).where(GroupModule.tenant_id == self.tenant.id,
                                             GroupModule.group_id == group.id))))
        if current == modules:
            return False
        self.session.execute(delete(GroupModule).where(GroupModule.tenant_id == self.tenant.id,
                                                       GroupModule.group_id == group.id))
        self.session.add_all(
            GroupModule(tenant_id=self.tenant.id, group_id=group.id, module=m) for m in modules)
        self._event(group.id, events.GROUP_MODULES, list(current), list(modules),
                    subject_type="group")
        return True

    def _apply_member_change(self, group: Group, change: MemberChange) -> bool:
        if change.action == "add":
            return self._add_members(group, change.member_ids)
        if change.action == "remove":
            return self._remove_members(group, change.member_ids)
        wanted = set(change.member_ids)
        current = self._member_ids(group)
        removed = self._remove_members(group, [m for m in current if m not in wanted])
        added = self._add_members(group, [m for m in change.member_ids if m not in set(current)])
        return removed or added

    def _member_ids(self, group: Group) -> list[str]:
        return list(self.session.scalars(select(Membership.member_id).where(
            Membership.tenant_id == self.tenant.id, Membership.group_id == group.id)))

    def _add_members(self, group: Group, member_ids: Sequence[str]) -> bool:
        wanted = list(dict.fromkeys(member_ids))
        if not wanted:
            return False
        types = self._member_types(group, wanted)
        present = set(self.session.scalars(select(Membership.member_id).where(
            Membership.tenant_id == self.tenant.id, Membership.group_id == group.id,
            Membership.member_id.in_(wanted))))
        new = [m for m in wanted if m not in present]
        self.session.add_all(
            Membership(tenant_id=self.tenant.id, group_id=group.id, member_id=m,
                       member_type=types[m], created_at=self.ctx.now) for m in new)
        for member_id in new:
            self._event(group.id, events.MEMBER_ADDED, None, member_id, subject_type="group",
                        object_id=member_id)
        return bool(new)

    def _remove_members(self, group: Group, member_ids: Sequence[str]) -> bool:
        if not member_ids:
            return False
        present = list(self.session.scalars(select(Membership.member_id).where(
            Membership.tenant_id == self.tenant.id, Membership.group_id == group.id,
            Membership.member_id.in_(list(member_ids)))))
        if not present:
            return False
        self.session.execute(delete(Membership).where(
            Membership.tenant_id == self.tenant.id, Membership.group_id == group.id,
            Membership.member_id.in_(present)))
        for member_id in present:
            self._event(group.id, events.MEMBER_REMOVED, member_id, None, subject_type="group",
                        object_id=member_id)
        return True

    def _member_types(self, group: Group, ids: Sequence[str]) -> dict[str, str]:
        """Resolve member ids to User/Group within this tenant; unknown ids are refused."""
        types = {i: "User" for i in self.session.scalars(select(User.id).where(
            User.tenant_id == self.tenant.id, User.id.in_(ids), User.removed_at.is_(None)))}
        rest = [i for i in ids if i not in types]
        if rest:
            types.update({i: "Group" for i in self.session.scalars(select(Group.id).where(
                Group.tenant_id == self.tenant.id, Group.id.in_(rest)))})
        missing = [i for i in ids if i not in types]
        if missing:
            raise InvalidReference(
                f"No user or group with id {missing[0]!r} in this tenant"
                + (f" (and {len(missing) - 1} more)." if len(missing) > 1 else "."))
        if group.id in types:
            raise InvalidReference("A group cannot be a member of itself.")
        return types

    # -- shared ---------------------------------------------------------------

    def _known_modules(self, wanted: Iterable[str]) -> tuple[str, ...]:
        wanted = list(wanted)
        if not wanted:
            return ()
        catalogue = module_catalogue(self.session, self.tenant.id)
        unknown = [m for m in wanted if m.casefold() not in catalogue]
        if unknown:
            raise UnknownModule(
                f"Module {unknown[0]!r} is not in this tenant's catalogue "
                f"({', '.join(sorted(catalogue.values()))}).")
        return tuple(sorted({catalogue[m.casefold()] for m in wanted}))

    def _touch(self, row: User | Group) -> None:
        row.version += 1
        row.modified_at = self.ctx.now
        self._note(row)

    def _note(self, row: User | Group) -> None:
        """Keep the changed object's externalId and name for its provisioning log entry
        (the session may no longer hold it when the batch's entries are written)."""
        if self.ctx.source in IDP_SOURCES:
            name = row.user_name if isinstance(row, User) else row.display_name
            self._objects[row.id] = (row.external_id, name)

    def _event(self, subject_id: str, kind: str, old: Any, new: Any,
               subject_type: str = "user", object_id: str | None = None) -> None:
        at, reason = self._correcting or (None, None)
        row = events.row(self.ctx, subject_type, subject_id, kind, old, new,
                         effective_at=at, object_id=object_id, reason=reason)
        if self._pending is None:  # outside a public call: write at once
            self._record([row])
        else:
            self._pending.append(row)


# For each thing a correction sets: the events that say what held from their instant on,
# the event a correction writes, and what an event says of it (`_held_after`).
_CORRECTED_BY = {
    "status": (events.USER_CREATED, events.USER_STATUS),
    "deletion": (events.USER_CREATED, events.USER_REMOVED, events.USER_RESTORED),
    "modules": (events.USER_CREATED, events.USER_MODULES, events.USER_REMOVED,
                events.USER_RESTORED),
    "guest": (events.USER_CREATED, events.USER_GUEST),
    "external_company_guest": (events.USER_CREATED, events.USER_EXTERNAL_GUEST),
    "frontline": (events.USER_CREATED, events.USER_FRONTLINE),
}
_CORRECTION_EVENT = {
    "status": events.USER_STATUS, "deletion": events.USER_REMOVED,
    "modules": events.USER_MODULES, "guest": events.USER_GUEST,
    "external_company_guest": events.USER_EXTERNAL_GUEST, "frontline": events.USER_FRONTLINE,
}
_CREATED_KEYS = {"status": "active", "guest": "guest",
                 "external_company_guest": "external_company_guest"}


def _held_after(aspect: str, kind: str, new: Any) -> Any:
    """What an event of `kind` with value `new` says of `aspect` from its instant on."""
    if kind == events.USER_CREATED:
        new = new if isinstance(new, dict) else {}
        if aspect == "deletion":
            return True
        if aspect == "modules":
            return sorted(new.get("modules") or [])
        if aspect == "frontline":
            return dict(new.get("frontline") or {})
        return bool(new.get(_CREATED_KEYS[aspect], aspect == "status"))
    if kind == events.USER_REMOVED:
        return False if aspect == "deletion" else []
    if kind == events.USER_RESTORED:
        new = new if isinstance(new, dict) else {}
        return True if aspect == "deletion" else sorted(new.get("modules") or [])
    if aspect == "modules":
        return sorted(new or [])
    if aspect == "frontline":
        return dict(new or {})
    return bool(new)


def _said(aspect: str, value: Any) -> str:
    if aspect == "status":
        return "active" if value else "inactive"
    if aspect == "deletion":
        return "deleted" if not value else "present"
    if aspect == "modules":
        return "modules " + (", ".join(value) or "none")
    if aspect == "frontline":
        return "frontline " + (", ".join(f"{k}={v}" for k, v in sorted(value.items())) or
                               "none")
    return f"{aspect.replace('_', ' ')} {'yes' if value else 'no'}"
