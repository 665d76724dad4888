"""Reads for the admin API and web UI: user lists, details, history, groups, audit, export.

Every query is scoped to one tenant first and pages in the database. A page costs a
fixed number of statements: the rows, their count, and one batch read of the page's
modules (a user's effective modules are its own plus those of the groups it is a
direct member of, PRODUCT.md "Modules").
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    ScalarSelect,
    and_,
    exists,
    func,
    or_,
    select,
    tuple_,
    union,
)
from sqlalchemy.orm import Session, aliased

from connector import counters, search_words, tenants
from connector.errors import InvalidSetting, NotFound
from connector.models import (
    AdminAccount,
    AuditEntry,
    Event,
    Group,
    GroupModule,
    Membership,
    Module,
    Tenant,
    User,
    UserModule,
    UserSearchWord,
    UserValue,
)

SORTS = {
    "userName": User.user_name_norm,
    "displayName": User.display_name_norm,
    "created": User.created_at,
    "modified": User.modified_at,
}
STATUSES = ("active", "inactive")
ORIGINS = ("scim", "entra_sync", "admin")
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class UserQuery:
    """What an admin asks of the users list. Validated by `user_query`."""

    q: str = ""
    status: str | None = None  # active | inactive
    guest: bool | None = None
    admin: bool | None = None
    module: str | None = None
    source: str | None = None  # scim | entra_sync | admin
    deleted_list: bool | None = None
    sort: str = "userName"
    descending: bool = False
    page: int = 1
    per_page: int = 50


def _flag(name: str, raw: str | None) -> bool | None:
    if raw in (None, ""):
        return None
    lowered = raw.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise InvalidSetting(f"{name} must be true or false; got {raw!r}.")


def _number(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSetting(f"{name} must be a whole number; got {raw!r}.") from None
    if not low <= value <= high:
        raise InvalidSetting(f"{name} must be between {low} and {high}; got {value}.")
    return value


def user_query(args: dict[str, str]) -> UserQuery:
    """Validate query-string arguments (API or UI) into a UserQuery; InvalidSetting says
    which argument is wrong."""
    status = args.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidSetting(f"status must be one of {', '.join(STATUSES)}; got {status!r}.")
    source = args.get("source") or None
    if source is not None and source not in ORIGINS:
        raise InvalidSetting(f"source must be one of {', '.join(ORIGINS)}; got {source!r}.")
    sort = args.get("sort") or "userName"
    descending = sort.startswith("-")
    sort = sort.lstrip("-")
    if sort not in SORTS:
        raise InvalidSetting(f"sort must be one of {', '.join(SORTS)} (prefix - for "
                             f"descending); got {args.get('sort')!r}.")
    q = (args.get("q") or "").strip()
    if len(q) > 200:
        raise InvalidSetting("q may have at most 200 characters.")
    if len(search_words.query_words(q)) > search_words.MAX_QUERY_WORDS:
        raise InvalidSetting(f"q may have at most {search_words.MAX_QUERY_WORDS} words; "
                             "search with fewer, more distinctive words.")
    return UserQuery(
        q=q, status=status, guest=_flag("guest", args.get("guest")),
        admin=_flag("admin", args.get("admin")), module=(args.get("module") or None),
        source=source, deleted_list=_flag("deleted_list", args.get("deleted_list")),
        sort=sort, descending=descending,
        page=_number("page", args.get("page"), 1, 1, 1_000_000),
        per_page=_number("per_page", args.get("per_page"), 50, 1, MAX_PER_PAGE))


@dataclass
class UserSummary:
    id: str
    user_name: str
    display_name: str | None
    given_name: str | None
    family_name: str | None
    email: str | None
    active: bool
    in_deleted_list: bool
    guest: bool
    admin: bool
    origin: str
    created_at: dt.datetime
    modified_at: dt.datetime
    version: int
    removed_at: dt.datetime | None = None
    purged_at: dt.datetime | None = None
    modules: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "userName": self.user_name, "displayName": self.display_name,
            "givenName": self.given_name, "familyName": self.family_name, "email": self.email,
            "status": "active" if self.active else "inactive",
            "inDeletedList": self.in_deleted_list, "guest": self.guest, "admin": self.admin,
            "source": self.origin, "modules": self.modules,
            "created": self.created_at.isoformat(), "modified": self.modified_at.isoformat(),
            "version": self.version,
            "removed": self.removed_at.isoformat() if self.removed_at else None,
        }


@dataclass(frozen=True)
class Page:
    items: list[Any]
    total: int
    page: int
    per_page: int
    capped: bool = False  # a search stopped at SEARCH_CAP matching users

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


# -- tenants, as a partner admin pages through a fleet of them ---------------------------

TENANT_STATES = ("open", "closed")


@dataclass(frozen=True)
class TenantQuery:
    """What an admin asks of the tenants list. Validated by `tenant_query`."""

    q: str = ""
    state: str | None = None  # open | closed
    page: int = 1
    per_page: int = 50


def tenant_query(args: dict[str, str]) -> TenantQuery:
    """Validate query-string arguments (API or UI) into a TenantQuery; InvalidSetting
    says which argument is wrong."""
    state = args.get("state") or None
    if state is not None and state not in TENANT_STATES:
        raise InvalidSetting(f"state must be one of {', '.join(TENANT_STATES)}; "
                             f"got {state!r}.")
    q = (args.get("q") or "").strip()
    if len(q) > 200:
        raise InvalidSetting("q may have at most 200 characters.")
    return TenantQuery(q=q, state=state,
                       page=_number("page", args.get("page"), 1, 1, 1_000_000),
                       per_page=_number("per_page", args.get("per_page"), 50, 1,
                                        MAX_PER_PAGE))


def tenant_search(q: str) -> Callable[[str, str], bool]:
    """Whether a tenant (id, name) is what `q` searches: its exact id, or a name holding
    `q` in any case, with or without accents (the Tenants page, the API and the CLI)."""
    wanted = search_words.fold(q)
    return lambda tenant_id, name: tenant_id == q or wanted in tenants.folded_name(name)


def find_tenants(session: Session, query: TenantQuery, only: str | None = None) -> Page:
    """A page of tenants, oldest first: those whose name contains `q` (ignoring case and
    accents) or whose id is `q`, open or closed as `state` asks; `only` limits the list
    to one tenant (a tenant admin's). Items are (Tenant, live users).

    Without `q` the page is counted and cut in SQL. A search folds the names in Python
    (the same folding on both databases, which SQL's LIKE does not give; folded names
    are remembered), over the tenants' ids and names only. Either way only the page's
    tenants are loaded whole and counted: with 10,000 tenants a page costs tens of
    milliseconds, where listing them all cost a second and 3 MB of JSON
    (docs/benchmarks.md)."""
    conditions = []
    if only is not None:
        conditions.append(Tenant.id == only)
    if query.state == "open":
        conditions.append(Tenant.closed_at.is_(None))
    elif query.state == "closed":
        conditions.append(Tenant.closed_at.is_not(None))
    order = (Tenant.created_at, Tenant.id)
    start = (query.page - 1) * query.per_page
    if query.q:
        rows = session.execute(select(Tenant.id, Tenant.name).where(*conditions)
                               .order_by(*order)).all()
        found = tenant_search(query.q)
        matching = [row.id for row in rows if found(row.id, row.name)]
        total, ids = len(matching), matching[start:start + query.per_page]
    else:
        total = int(session.scalar(select(func.count()).select_from(Tenant)
                                   .where(*conditions)) or 0)
        ids = list(session.scalars(select(Tenant.id).where(*conditions).order_by(*order)
                                   .offset(start).limit(query.per_page)))
    loaded = {t.id: t for t in session.scalars(select(Tenant).where(Tenant.id.in_(ids)))}
    users = counters.live_users_of(session, ids)
    return Page([(loaded[i], users[i]) for i in ids if i in loaded], total, query.page,
                query.per_page)


ADMIN_ROLES = ("partner", "tenant")


@dataclass(frozen=True)
class AdminQuery:
    """What a partner admin asks of the admin accounts list. Validated by `admin_query`."""

    q: str = ""
    role: str | None = None  # partner | tenant
    tenant_id: str | None = None
    page: int = 1
    per_page: int = 50


def admin_query(args: dict[str, str]) -> AdminQuery:
    """Validate query-string arguments (API or UI) into an AdminQuery."""
    role = args.get("role") or None
    if role is not None and role not in ADMIN_ROLES:
        raise InvalidSetting(f"role must be one of {', '.join(ADMIN_ROLES)}; got {role!r}.")
    q = (args.get("q") or "").strip()
    if len(q) > 320:
        raise InvalidSetting("q may have at most 320 characters.")
    tenant_id = (args.get("tenant_id") or args.get("tenantId") or "").strip() or None
    if tenant_id is not None and len(tenant_id) > 36:
        raise InvalidSetting("tenant_id is a tenant's id, at most 36 characters.")
    return AdminQuery(q=q, role=role, tenant_id=tenant_id,
                      page=_number("page", args.get("page"), 1, 1, 1_000_000),
                      per_page=_number("per_page", args.get("per_page"), 50, 1,
                                       MAX_PER_PAGE))


def find_admins(session: Session, query: AdminQuery) -> Page:
    """A page of admin accounts in e-mail order: those whose address contains `q` (any
    case), of one role, of one tenant. Counted and cut in SQL."""
    conditions: list[ColumnElement[bool]] = []
    if query.q:
        conditions.append(AdminAccount.email_norm.contains(query.q.lower(), autoescape=True))
    if query.role is not None:
        conditions.append(AdminAccount.role == query.role)
    if query.tenant_id is not None:
        conditions.append(AdminAccount.tenant_id == query.tenant_id)
    total = int(session.scalar(select(func.count()).select_from(AdminAccount)
                               .where(*conditions)) or 0)
    rows = list(session.scalars(select(AdminAccount).where(*conditions)
                                .order_by(AdminAccount.email_norm, AdminAccount.id)
                                .offset((query.page - 1) * query.per_page)
                                .limit(query.per_page)))
    return Page(rows, total, query.page, query.per_page)


_SUMMARY_COLUMNS = (User.id, User.user_name, User.display_name, User.active,
                    User.in_deleted_list, User.guest, User.admin, User.origin, User.created_at,
                    User.modified_at, User.version, User.removed_at, User.purged_at, User.data)


def _summary(row: Any, modules: list[str]) -> UserSummary:
    data = row.data or {}
    name = data.get("name")
    if not isinstance(name, dict):
        name = {}
    return UserSummary(
        id=row.id, user_name=row.user_name, display_name=row.display_name,
        given_name=name.get("givenName"), family_name=name.get("familyName"),
        email=primary_email(data), active=row.active, in_deleted_list=row.in_deleted_list,
        guest=row.guest, admin=row.admin, origin=row.origin, created_at=row.created_at,
        modified_at=row.modified_at, version=row.version, removed_at=row.removed_at,
        purged_at=row.purged_at, modules=modules)


def primary_email(data: dict[str, Any]) -> str | None:
    emails = data.get("emails")
    if not isinstance(emails, list):
        return None
    values = [e for e in emails if isinstance(e, dict) and isinstance(e.get("value"), str)]
    chosen = next((e for e in values if e.get("primary") is True), values[0] if values else None)
    return chosen["value"] if chosen else None


def _prefix(column: Any, text: str) -> ColumnElement[bool]:
    # A range on the casefolded column: the index answers it on both databases (LIKE
    # would need a matching collation or operator class).
    return and_(column >= text, column < text + "\U0010ffff")


SEARCH_CAP = 1000
_WORDS_READ = 2000  # search-word rows per statement while collecting candidates


def _search_candidates(session: Session, tenant_id: str, q: str) -> tuple[list[str], bool]:
    """Ids of users having, for every word of `q`, a search word that starts with it
    (case and accents ignored: `connector.search_words`), or whose id is `q`: at most
    SEARCH_CAP. Returns (ids, capped): capped when more users match.

    The longest word is read as one range of the words' primary key, in index order; each
    further word is one probe of the user's own words. A user may match a word through
    several of its own (`example` starts `example.com` and `example.cz`), so rows are
    read in keyset batches until SEARCH_CAP + 1 users are found or the range ends.
    Removed users keep their words; the page's read of the users leaves them out.
    """
    found: dict[str, None] = {}
    words = search_words.query_words(q)
    if words:
        statement = select(UserSearchWord.word, UserSearchWord.user_id).where(
            UserSearchWord.tenant_id == tenant_id, _prefix(UserSearchWord.word, words[0]))
        for other in words[1:]:
            own = aliased(UserSearchWord)
            statement = statement.where(exists().where(
                own.tenant_id == UserSearchWord.tenant_id,
                own.user_id == UserSearchWord.user_id, _prefix(own.word, other)))
        statement = statement.order_by(UserSearchWord.word, UserSearchWord.user_id)
        after: tuple[str, str] | None = None
        while len(found) <= SEARCH_CAP:
            batch = statement if after is None else statement.where(
                tuple_(UserSearchWord.word, UserSearchWord.user_id) > tuple_(*after))
            rows = session.execute(batch.limit(_WORDS_READ)).all()
            found.update(dict.fromkeys(r.user_id for r in rows))
            if len(rows) < _WORDS_READ:
                break
            after = (rows[-1].word, rows[-1].user_id)
    capped = len(found) > SEARCH_CAP
    ids = list(found)[:SEARCH_CAP]
    if len(q) == 36 and q not in found:
        ids += session.scalars(select(User.id).where(
            User.tenant_id == tenant_id, User.removed_at.is_(None), User.id == q)).all()
    return ids, capped


def _with_module(tenant_id: str, module: str) -> Any:
    """Ids of users that have `module` themselves or through a group they are in.
    Assignment and membership rows exist for live users only (the directory deletes
    them on removal), so this needs no look at the users table."""
    own = select(UserModule.user_id).where(UserModule.tenant_id == tenant_id,
                                           UserModule.module == module)
    via_group = (select(Membership.member_id)
                 .join(GroupModule, and_(GroupModule.tenant_id == Membership.tenant_id,
                                         GroupModule.group_id == Membership.group_id))
                 .where(GroupModule.tenant_id == tenant_id, GroupModule.module == module))
    return union(own, via_group)


def _has_module(module: str) -> ColumnElement[bool]:
    """The same test per user row, as two index probes."""
    own = exists().where(UserModule.tenant_id == User.tenant_id,
                         UserModule.user_id == User.id, UserModule.module == module)
    via_group = exists().where(
        Membership.tenant_id == User.tenant_id, Membership.member_id == User.id,
        GroupModule.tenant_id == Membership.tenant_id,
        GroupModule.group_id == Membership.group_id, GroupModule.module == module)
    return or_(own, via_group)


# Below this many holders a module filter reads the holders' set (small, quick to
# build); above it, walking users in page order and probing each finds a page sooner
# than building a set of tens of thousands of ids.
MODULE_SET_LIMIT = 5000


def _conditions(tenant_id: str, query: UserQuery, module_holders: int | None
                ) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [User.tenant_id == tenant_id, User.removed_at.is_(None)]
    if query.status is not None:
        where.append(User.active.is_(query.status == "active"))
    if query.guest is not None:
        where.append(User.guest.is_(query.guest))
    if query.admin is not None:
        where.append(User.admin.is_(query.admin))
    if query.source is not None:
        where.append(User.origin == query.source)
    if query.deleted_list is not None:
        where.append(User.in_deleted_list.is_(query.deleted_list))
    if query.module is not None and module_holders is not None:
        if module_holders <= MODULE_SET_LIMIT:
            where.append(User.id.in_(_with_module(tenant_id, query.module)))
        else:
            where.append(_has_module(query.module))
    return where


def _filtered(query: UserQuery) -> bool:
    return any(v is not None for v in (query.status, query.guest, query.admin, query.source,
                                       query.deleted_list, query.module)) or bool(query.q)


def list_users(session: Session, tenant_id: str, query: UserQuery) -> Page:
    """A page of the tenant's live users matching `query`, with the total count.

    A search (`q`) looks at no more than SEARCH_CAP matching users; past that the page
    says `capped` and the admin narrows the search.
    """
    if query.module is not None:
        canonical = tenants.module_catalogue(session, tenant_id).get(query.module.casefold())
        if canonical is None:
            return Page([], 0, query.page, query.per_page)
        query = replace(query, module=canonical)
    if query.q:
        return _search_page(session, tenant_id, query)
    holders = None
    if query.module is not None:
        holders = session.scalar(select(func.count()).select_from(
            _with_module(tenant_id, query.module).subquery())) or 0
        if holders == 0:
            return Page([], 0, query.page, query.per_page)
    where = _conditions(tenant_id, query, holders)
    column = SORTS[query.sort]
    ordered = column.desc() if query.descending else column.asc()
    if query.sort == "displayName":
        # Users without a display name last either way (the databases disagree where
        # NULLs go by default), ties in id order.
        order = [ordered.nulls_last(), User.id.desc() if query.descending else User.id]
    elif query.sort == "userName":
        order = [ordered]  # unique among live users: its index gives the page as is
    else:
        order = [ordered, User.id.desc() if query.descending else User.id]
    rows = session.execute(
        select(*_SUMMARY_COLUMNS).where(*where).order_by(*order)
        .offset((query.page - 1) * query.per_page).limit(query.per_page)).all()
    if query.page == 1 and len(rows) < query.per_page:
        total = len(rows)  # the whole result is on this page: no need to count
    elif not _filtered(query):
        total = counters.live_users(session, tenant_id)  # kept by the directory
    elif holders is not None and where_only_module(query):
        total = holders
    else:
        total = session.scalar(select(func.count()).select_from(User).where(*where)) or 0
    modules = effective_modules(session, tenant_id, [r.id for r in rows])
    return Page([_summary(r, modules.get(r.id, [])) for r in rows], total, query.page,
                query.per_page)


_LIGHT = (User.id, User.user_name_norm, User.display_name_norm, User.created_at,
          User.modified_at, User.active, User.guest, User.admin, User.origin,
          User.in_deleted_list)
_SORT_FIELDS = {"userName": "user_name_norm", "displayName": "display_name_norm",
                "created": "created_at", "modified": "modified_at"}


def _search_page(session: Session, tenant_id: str, query: UserQuery) -> Page:
    """A search's page: the candidates (at most SEARCH_CAP) are filtered, counted and
    sorted in memory, so the cost is bounded by the cap whatever the tenant's size and
    the filters (the databases planned an id list combined with other filters badly)."""
    candidates, capped = _search_candidates(session, tenant_id, query.q)
    light: list[Row[*tuple[Any, ...]]] = []
    for start in range(0, len(candidates), 500):
        light += session.execute(select(*_LIGHT).where(
            User.tenant_id == tenant_id, User.removed_at.is_(None),
            User.id.in_(candidates[start:start + 500]))).all()
    wanted = {"active": None if query.status is None else query.status == "active",
              "guest": query.guest, "admin": query.admin, "origin": query.source,
              "in_deleted_list": query.deleted_list}
    light = [r for r in light
             if all(v is None or getattr(r, k) == v for k, v in wanted.items())]
    if query.module is not None:
        holding = effective_modules(session, tenant_id, [r.id for r in light])
        light = [r for r in light if query.module in holding.get(r.id, ())]
    field = _SORT_FIELDS[query.sort]
    present = sorted((r for r in light if getattr(r, field) is not None),
                     key=lambda r: (getattr(r, field), r.id), reverse=query.descending)
    ordered = present + sorted((r for r in light if getattr(r, field) is None),
                               key=lambda r: r.id, reverse=query.descending)
    start = (query.page - 1) * query.per_page
    page_ids = [r.id for r in ordered[start:start + query.per_page]]
    rows = {r.id: r for r in session.execute(select(*_SUMMARY_COLUMNS).where(
        User.tenant_id == tenant_id, User.id.in_(page_ids)))} if page_ids else {}
    modules = effective_modules(session, tenant_id, page_ids)
    return Page([_summary(rows[i], modules.get(i, [])) for i in page_ids if i in rows],
                len(ordered), query.page, query.per_page, capped)


def where_only_module(query: UserQuery) -> bool:
    return query.module is not None and not _filtered(UserQuery(
        q=query.q, status=query.status, guest=query.guest, admin=query.admin,
        source=query.source, deleted_list=query.deleted_list))


def effective_modules(session: Session, tenant_id: str, user_ids: Sequence[str]
                      ) -> dict[str, list[str]]:
    """Each user's own modules ∪ its groups' modules, sorted, in one statement."""
    if not user_ids:
        return {}
    own = select(UserModule.user_id.label("uid"), UserModule.module.label("module")).where(
        UserModule.tenant_id == tenant_id, UserModule.user_id.in_(user_ids))
    via = (select(Membership.member_id.label("uid"), GroupModule.module.label("module"))
           .join(GroupModule, and_(GroupModule.tenant_id == Membership.tenant_id,
                                   GroupModule.group_id == Membership.group_id))
           .where(Membership.tenant_id == tenant_id, Membership.member_id.in_(user_ids)))
    found: dict[str, set[str]] = defaultdict(set)
    for uid, module in session.execute(union(own, via)):
        found[uid].add(module)
    return {uid: sorted(mods) for uid, mods in found.items()}


def get_user(session: Session, tenant_id: str, user_id: str, include_removed: bool = False
             ) -> UserSummary:
    where = [User.tenant_id == tenant_id, User.id == user_id]
    if not include_removed:
        where.append(User.removed_at.is_(None))
    row = session.execute(select(*_SUMMARY_COLUMNS).where(*where)).first()
    if row is None:
        raise NotFound(f"User {user_id} not found in this tenant.")
    return _summary(row, effective_modules(session, tenant_id, [user_id]).get(user_id, []))


def user_detail(session: Session, tenant_id: str, user_id: str) -> dict[str, Any]:
    """A user with its own and effective modules and its groups (live or deleted)."""
    summary = get_user(session, tenant_id, user_id, include_removed=True)
    own = list(session.scalars(select(UserModule.module).where(
        UserModule.tenant_id == tenant_id, UserModule.user_id == user_id)
        .order_by(UserModule.module)))
    groups = [{"id": gid, "displayName": name} for gid, name in session.execute(
        select(Group.id, Group.display_name)
        .join(Membership, and_(Membership.tenant_id == Group.tenant_id,
                               Membership.group_id == Group.id))
        .where(Membership.tenant_id == tenant_id, Membership.member_id == user_id)
        .order_by(Group.display_name_norm))]
    external_guest, frontline = session.execute(
        select(User.external_company_guest, User.frontline)
        .where(User.tenant_id == tenant_id, User.id == user_id)).one()
    return {**summary.as_json(), "externalCompanyGuest": external_guest,
            "frontline": frontline or None, "ownModules": own, "groups": groups,
            "profile": user_profile(session, tenant_id, user_id)}


ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
_ENTERPRISE_FIELDS = ("employeeNumber", "department", "organization", "division",
                      "costCenter")


def user_profile(session: Session, tenant_id: str, user_id: str) -> dict[str, Any]:
    """The profile attributes beyond the name and e-mail, as SCIM pushes or the Entra
    sync's mapping table left them: job title, the enterprise extension's attributes,
    the manager (as a user of this tenant), phone numbers and addresses."""
    data = session.scalar(select(User.data).where(User.tenant_id == tenant_id,
                                                  User.id == user_id)) or {}
    enterprise = data.get(ENTERPRISE_USER)
    enterprise = enterprise if isinstance(enterprise, dict) else {}
    manager_ref = enterprise.get("manager")
    manager = None
    if isinstance(manager_ref, dict) and isinstance(manager_ref.get("value"), str):
        found = session.execute(select(User.user_name, User.display_name).where(
            User.tenant_id == tenant_id, User.id == manager_ref["value"])).first()
        manager = {"id": manager_ref["value"], "userName": found[0] if found else None,
                   "displayName": found[1] if found else None}
    return {
        "title": _text(data.get("title")),
        **{name: _text(enterprise.get(name)) for name in _ENTERPRISE_FIELDS},
        "manager": manager,
        "phoneNumbers": [{"type": _text(p.get("type")), "value": _text(p.get("value"))}
                         for p in data.get("phoneNumbers") or () if isinstance(p, dict)],
        "addresses": [{k: v for k, v in a.items() if isinstance(v, str)}
                      for a in data.get("addresses") or () if isinstance(a, dict)],
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def user_history(session: Session, tenant_id: str, user_id: str, limit: int = 500,
                 correlation_id: str | None = None) -> list[dict[str, Any]]:
    """The user's events, newest first: its status timeline and every other change
    (`correlation_id`: only those one request recorded). Group memberships are events
    of the group; the detail shows the current ones. A back-dated correction shows
    where it took effect, with its reason."""
    query = select(Event).where(Event.tenant_id == tenant_id, Event.subject_id == user_id)
    if correlation_id is not None:
        query = query.where(Event.correlation_id == correlation_id)
    rows = session.scalars(query.order_by(Event.effective_at.desc(), Event.id.desc())
                           .limit(limit))
    return [event_json(e) for e in rows]


def event_json(e: Event) -> dict[str, Any]:
    return {"id": e.id, "kind": e.kind, "subjectType": e.subject_type,
            "subjectId": e.subject_id, "old": e.old_value, "new": e.new_value,
            "effectiveAt": e.effective_at.isoformat(), "recordedAt": e.recorded_at.isoformat(),
            "source": e.source, "actor": e.actor, "correlationId": e.correlation_id,
            "reason": e.reason}


def deleted_users(session: Session, tenant_id: str, page: int = 1, per_page: int = 50
                  ) -> Page:
    """The deleted-users list: users the IdP disabled (still present) or deleted, that
    no admin removed for good. Most recently changed first."""
    where = [User.tenant_id == tenant_id, User.purged_at.is_(None),
             or_(and_(User.removed_at.is_(None), User.in_deleted_list.is_(True)),
                 User.removed_at.is_not(None))]
    total = session.scalar(select(func.count()).select_from(User).where(*where)) or 0
    rows = session.execute(select(*_SUMMARY_COLUMNS).where(*where)
                           .order_by(User.modified_at.desc(), User.id)
                           .offset((page - 1) * per_page).limit(per_page)).all()
    return Page([_summary(r, []) for r in rows], total, page, per_page)


# -- groups and modules -----------------------------------------------------------------


def list_groups(session: Session, tenant_id: str, q: str = "", page: int = 1,
                per_page: int = 50) -> Page:
    where: list[ColumnElement[bool]] = [Group.tenant_id == tenant_id]
    if q:
        where.append(_prefix(Group.display_name_norm, q.casefold()))
    total = session.scalar(select(func.count()).select_from(Group).where(*where)) or 0
    groups = session.execute(select(Group.id, Group.display_name, Group.external_id,
                                    Group.origin, Group.version).where(*where)
                             .order_by(Group.display_name_norm)
                             .offset((page - 1) * per_page).limit(per_page)).all()
    ids = [g.id for g in groups]
    members = dict(session.execute(
        select(Membership.group_id, func.count()).where(
            Membership.tenant_id == tenant_id, Membership.group_id.in_(ids))
        .group_by(Membership.group_id)).all()) if ids else {}
    modules: dict[str, list[str]] = defaultdict(list)
    if ids:
        for gid, module in session.execute(
                select(GroupModule.group_id, GroupModule.module).where(
                    GroupModule.tenant_id == tenant_id, GroupModule.group_id.in_(ids))
                .order_by(GroupModule.module)):
            modules[gid].append(module)
    items = [{"id": g.id, "displayName": g.display_name, "externalId": g.external_id,
              "source": g.origin, "version": g.version, "members": members.get(g.id, 0),
              "modules": modules.get(g.id, [])} for g in groups]
    return Page(items, total, page, per_page)


def get_group(session: Session, tenant_id: str, group_id: str) -> dict[str, Any]:
    group = session.get(Group, (tenant_id, group_id))
    if group is None:
        raise NotFound(f"Group {group_id} not found in this tenant.")
    modules = list(session.scalars(select(GroupModule.module).where(
        GroupModule.tenant_id == tenant_id, GroupModule.group_id == group_id)
        .order_by(GroupModule.module)))
    members = session.scalar(select(func.count()).select_from(Membership).where(
        Membership.tenant_id == tenant_id, Membership.group_id == group_id)) or 0
    return {"id": group.id, "displayName": group.display_name,
            "externalId": group.external_id, "source": group.origin,
            "version": group.version, "members": members, "modules": modules}


def group_members(session: Session, tenant_id: str, group_id: str, page: int = 1,
                  per_page: int = 50) -> Page:
    where = [Membership.tenant_id == tenant_id, Membership.group_id == group_id]
    total = session.scalar(select(func.count()).select_from(Membership).where(*where)) or 0
    rows = session.execute(
        select(Membership.member_id, Membership.member_type,
               func.coalesce(User.user_name, Group.display_name).label("name"))
        .outerjoin(User, and_(User.tenant_id == Membership.tenant_id,
                              User.id == Membership.member_id))
        .outerjoin(Group, and_(Group.tenant_id == Membership.tenant_id,
                               Group.id == Membership.member_id))
        .where(*where).order_by(func.lower(func.coalesce(User.user_name, Group.display_name)),
                                Membership.member_id)
        .offset((page - 1) * per_page).limit(per_page)).all()
    return Page([{"id": r.member_id, "type": r.member_type, "name": r.name} for r in rows],
                total, page, per_page)


def module_usage(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    """The catalogue with how many users and groups have each module directly."""
    users = dict(session.execute(
        select(UserModule.module, func.count()).where(UserModule.tenant_id == tenant_id)
        .group_by(UserModule.module)).all())
    groups = dict(session.execute(
        select(GroupModule.module, func.count()).where(GroupModule.tenant_id == tenant_id)
        .group_by(GroupModule.module)).all())
    return [{"name": name, "users": users.get(name, 0), "groups": groups.get(name, 0)}
            for name in session.scalars(select(Module.name).where(Module.tenant_id == tenant_id)
                                        .order_by(Module.name))]


# -- audit ------------------------------------------------------------------------------


def audit_entries(session: Session, tenant_id: str | None, page: int = 1, per_page: int = 50
                  ) -> Page:
    """Admin actions, newest first: one tenant's, or (None) every one, for partners."""
    where = [] if tenant_id is None else [AuditEntry.tenant_id == tenant_id]
    total = session.scalar(select(func.count()).select_from(AuditEntry).where(*where)) or 0
    rows = session.scalars(select(AuditEntry).where(*where).order_by(AuditEntry.id.desc())
                           .offset((page - 1) * per_page).limit(per_page))
    return Page([{"id": a.id, "at": a.at.isoformat(), "actor": a.actor, "action": a.action,
                  "tenantId": a.tenant_id, "target": a.target, "detail": a.detail,
                  "remoteAddr": a.remote_addr, "correlationId": a.correlation_id}
                 for a in rows], total, page, per_page)


# -- export -----------------------------------------------------------------------------

EXPORT_BATCH = 2000


@dataclass(frozen=True)
class ExportRow:
    """What the users CSV shows of one user (PRODUCT.md "Reporting")."""

    user_name: str
    given_name: str | None
    family_name: str | None
    email: str | None
    active: bool
    guest: bool
    admin: bool
    modules: list[str]


def primary_email_column() -> ScalarSelect[str | None]:
    """Return a user's primary e-mail address (else its first, else NULL) as a scalar
    subquery correlated to `User`: a column for any select whose FROM holds `users`,
    such as the users export (`primary_email` reads it from a loaded profile).

    It reads the filter index rows (`user_values`) rather than the user's JSON profile:
    parsing every profile was a third of the users export."""
    return (select(UserValue.value)
            .where(UserValue.tenant_id == User.tenant_id, UserValue.user_id == User.id,
                   UserValue.attr == "emails")
            .order_by(UserValue.primary.desc(), UserValue.position).limit(1)
            .correlate(User).scalar_subquery())


_EXPORT_COLUMNS = (User.id, User.user_name, User.user_name_norm, User.active, User.guest,
                   User.admin, User.data["name"]["givenName"].as_string().label("given"),
                   User.data["name"]["familyName"].as_string().label("family"),
                   primary_email_column().label("email"))


def export_users(session: Session, tenant_id: str, batch: int = EXPORT_BATCH
                 ) -> Iterator[ExportRow]:
    """Every live user in userName order, read in keyset batches so that memory stays
    flat whatever the tenant's size: two statements per batch, bound by a range of the
    userName index rather than a list of ids."""
    after: str | None = None
    live = (User.tenant_id == tenant_id, User.removed_at.is_(None))
    while True:
        window = [*live] if after is None else [*live, User.user_name_norm > after]
        rows = session.execute(select(*_EXPORT_COLUMNS).where(*window)
                               .order_by(User.user_name_norm).limit(batch)).all()
        if not rows:
            return
        last = rows[-1].user_name_norm
        modules = _modules_in_range(session, [*window, User.user_name_norm <= last])
        for r in rows:
            yield ExportRow(r.user_name, r.given, r.family, r.email, r.active, r.guest,
                            r.admin, sorted(modules.get(r.id, ())))
        after = last


def _modules_in_range(session: Session, where: list[ColumnElement[bool]]
                      ) -> dict[str, set[str]]:
    """Effective modules of the users `where` selects, by joins (no id list)."""
    own = (select(UserModule.user_id.label("uid"), UserModule.module.label("module"))
           .join(User, and_(User.tenant_id == UserModule.tenant_id,
                            User.id == UserModule.user_id)).where(*where))
    via = (select(Membership.member_id.label("uid"), GroupModule.module.label("module"))
           .join(GroupModule, and_(GroupModule.tenant_id == Membership.tenant_id,
                                   GroupModule.group_id == Membership.group_id))
           .join(User, and_(User.tenant_id == Membership.tenant_id,
                            User.id == Membership.member_id)).where(*where))
    found: dict[str, set[str]] = defaultdict(set)
    for uid, module in session.execute(union(own, via)):
        found[uid].add(module)
    return found
