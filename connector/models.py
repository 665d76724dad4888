"""The storage schema: current-state tables and the append-only event log.

Every table is keyed by tenant first, so tenants can later be spread over several
database servers by tenant id. The current-state tables are what SCIM, the UI and the
API read; the event log is what billing and history read. Only the directory service
(`connector.directory`) writes users, groups, memberships, modules and events.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from connector.status import ScimDefaultStatus, StatusSource

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Store instants as UTC and always hand back timezone-aware datetimes.

    SQLite has no timezone type; without this a value read back is naive and
    comparisons with aware `now` values fail or, worse, silently shift.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# Event ids: BIGINT on PostgreSQL, INTEGER PRIMARY KEY (the rowid) on SQLite.
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)

    if TYPE_CHECKING:
        # Every model maps one Table (none a join or a subquery), which the core
        # statements on `Model.__table__` rely on; SQLAlchemy only promises a FromClause.
        __table__: ClassVar[Table]


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Status authority (PRODUCT.md). Plain strings in the database (the column types are
    # given): the Literal types only say which values the code may write.
    status_source: Mapped[StatusSource] = mapped_column(String(32), default="identity_provider")
    # Given to users newly created through SCIM; never retroactive.
    scim_default_status: Mapped[ScimDefaultStatus] = mapped_column(String(16), default="active")
    provisioning_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # Fed by the Entra ID poller rather than SCIM: a tenant has one provisioning path,
    # and the other one's writes are refused.
    entra_sync: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")


class TenantCounter(Base):
    """Live (not removed) users of a tenant.

    The directory changes it in the same transaction as every user creation and
    removal, so an unfiltered list's totalResults is one primary-key read instead of a
    count over 100,000 index entries. `connector.counters` keeps and repairs it.
    """

    __tablename__ = "tenant_counters"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    live_users: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped by every creation and removal: while it stands still, the id order of the
    # live users is unchanged, so a position found once (a page anchor) stays true.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ScimToken(Base):
    """A tenant's SCIM bearer token, stored as a SHA-256 digest, never in clear."""

    __tablename__ = "scim_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class User(Base):
    """A user's current state. `data` holds the SCIM profile attributes; the columns
    hold what is indexed, filtered on, or owned by the status rules."""

    __tablename__ = "users"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(512))
    user_name_norm: Mapped[str] = mapped_column(String(512))
    external_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    display_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    display_name_norm: Mapped[str | None] = mapped_column(String(512), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean)
    # What the identity provider last said about `active`; kept even when the
    # tenant's status source is the connector, so switching back can re-apply it.
    idp_active: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # Deactivated by the identity provider: the tenant's deleted-users list.
    in_deleted_list: Mapped[bool] = mapped_column(Boolean, default=False)
    guest: Mapped[bool] = mapped_column(Boolean, default=False)
    # A guest from another company in a multi-company group: never billed.
    external_company_guest: Mapped[bool] = mapped_column(Boolean, default=False)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # The frontline plan's attributes (billing): desklessPercent, paidHourly, hasEmail,
    # frontlineRole, as far as a writer gave them.
    frontline: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Invited to claim an account, and claimed it (billing's `invited` policy).
    invited_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Who created the user: scim | entra_sync | admin.
    origin: Mapped[str] = mapped_column(String(16))
    # Set by SCIM DELETE or a Graph @removed entry: hidden from directory views,
    # history kept. The userName and externalId become free again.
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # An admin removed the user for good from the deleted-users list: it can no longer be
    # restored. The row and its events stay, for billing.
    purged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Entra sync: the last full round (sync_runs.id) that saw this user. A full round
    # ends by sweeping the synced users it did not see (Graph sends them no @removed).
    seen_in_run: Mapped[int | None] = mapped_column(EventId, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    modified_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index(
            "uq_users_tenant_user_name",
            "tenant_id",
            "user_name_norm",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
        Index(
            "uq_users_tenant_external_id",
            "tenant_id",
            "external_id",
            unique=True,
            sqlite_where=text("removed_at IS NULL AND external_id IS NOT NULL"),
            postgresql_where=text("removed_at IS NULL AND external_id IS NOT NULL"),
        ),
        # Every externalId, removed users' too: the Entra poller finds a user by its
        # Graph object id whether it is live or was deleted (and may come back).
        Index("ix_users_tenant_external_any", "tenant_id", "external_id"),
        Index("ix_users_tenant_display_name", "tenant_id", "display_name_norm"),
        # Live users only: counts and id-ordered pages walk this small index instead of
        # reading every row to test removed_at.
        Index(
            "ix_users_live",
            "tenant_id",
            "id",
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
        # id too: pages sorted by time break ties by id, and a bulk import gives many
        # users the same instant; without it the database sorted every tie.
        Index("ix_users_tenant_modified", "tenant_id", "modified_at", "id"),
        Index("ix_users_tenant_created", "tenant_id", "created_at", "id"),
        # The admin users page: filtered by status or guest, in userName order, counted.
        # Each filter is one range of its index, already in page order.
        Index(
            "ix_users_live_active",
            "tenant_id",
            "active",
            "user_name_norm",
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
        Index(
            "ix_users_live_guest",
            "tenant_id",
            "guest",
            "user_name_norm",
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
        Index(
            "ix_users_live_origin",
            "tenant_id",
            "origin",
            "user_name_norm",
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )


class UserValue(Base):
    """One element of a multi-valued user attribute (emails, phoneNumbers, addresses…).

    The full element is in the owning user's `data`; these rows exist so that filters
    such as `emails[type eq "work" and value co "@example.com"]` run in the database.
    """

    __tablename__ = "user_values"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    attr: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    value_norm: Mapped[str | None] = mapped_column(Text, nullable=True)
    type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    display: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        Index("ix_user_values_lookup", "tenant_id", "attr", "value_norm"),
    )


class Group(Base):
    __tablename__ = "groups"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(512))
    display_name_norm: Mapped[str] = mapped_column(String(512))
    external_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    origin: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    modified_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Entra sync: the last full round that saw this group (see User.seen_in_run).
    seen_in_run: Mapped[int | None] = mapped_column(EventId, nullable=True)

    __table_args__ = (
        Index("uq_groups_tenant_display_name", "tenant_id", "display_name_norm", unique=True),
        Index(
            "uq_groups_tenant_external_id",
            "tenant_id",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )


class Membership(Base):
    """A direct member (user or group) of a group. One row per member, so adding or
    removing a member never rewrites the group's whole list."""

    __tablename__ = "memberships"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_type: Mapped[str] = mapped_column(String(8))  # User | Group
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Entra sync: the last full round that listed this membership.
    seen_in_run: Mapped[int | None] = mapped_column(EventId, nullable=True)

    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "group_id"], ["groups.tenant_id", "groups.id"], ondelete="CASCADE"
        ),
        # Covering (group_id included): a user's groups are read from the index alone.
        Index("ix_memberships_member_group", "tenant_id", "member_id", "group_id"),
    )


class Module(Base):
    """The tenant's module catalogue (Hybrid, Engage, Unify, legacy plans…)."""

    __tablename__ = "modules"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class UserModule(Base):
    __tablename__ = "user_modules"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    module: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        # "Users with module X" (admin filter, billing counts) without reading every row.
        Index("ix_user_modules_module", "tenant_id", "module", "user_id"),
    )


class GroupModule(Base):
    __tablename__ = "group_modules"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    module: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "group_id"], ["groups.tenant_id", "groups.id"], ondelete="CASCADE"
        ),
        Index("ix_group_modules_module", "tenant_id", "module", "group_id"),
    )


class Event(Base):
    """One append-only fact: never updated, never deleted.

    `effective_at` is when it happened as the source says; `recorded_at` is when the
    connector learned it. Billing folds these, never the current-state tables.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    subject_type: Mapped[str] = mapped_column(String(8))  # user | group | tenant
    subject_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    old_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    new_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(16))  # scim | entra_sync | admin | system
    actor: Mapped[str] = mapped_column(String(200))
    correlation_id: Mapped[str] = mapped_column(String(64))
    # The other party of a relation event: the member of a group.member_added/removed
    # event. Indexed, so a month close reads a user's memberships by the user.
    object_id: Mapped[str | None] = mapped_column(String(36), nullable=True)

    __table_args__ = (
        Index("ix_events_subject", "tenant_id", "subject_id", "effective_at"),
        # effective_at too: a month close finds what was learned late (recorded since
        # the last close, effective before its month) from the index alone.
        Index("ix_events_tenant_recorded", "tenant_id", "recorded_at", "effective_at"),
        # Groups' own changes (not memberships, which name a member in object_id): a
        # month close folds every group's modules from these.
        Index(
            "ix_events_group_changes",
            "tenant_id",
            "effective_at",
            sqlite_where=text("subject_type = 'group' AND object_id IS NULL"),
            postgresql_where=text("subject_type = 'group' AND object_id IS NULL"),
        ),
        Index(
            "ix_events_object",
            "tenant_id",
            "object_id",
            "effective_at",
            sqlite_where=text("object_id IS NOT NULL"),
            postgresql_where=text("object_id IS NOT NULL"),
        ),
    )


class AdminAccount(Base):
    """Someone who signs in to the admin UI or calls the admin API.

    role `partner` sees every tenant; role `tenant` sees only `tenant_id`. The password
    is kept as a werkzeug scrypt hash (a memory-hard KDF), never in clear.
    """

    __tablename__ = "admin_accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_norm: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # partner | tenant
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    # Set for a password someone else chose (the one-time password `connector admin
    # create` prints): the next sign-in must choose a new one before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    # Changing it signs out every browser session of the account (password change,
    # disabling): sessions carry the epoch they were issued under.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AdminToken(Base):
    """A personal API token of an admin, for scripts: a SHA-256 digest, shown once."""

    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    admin_id: Mapped[str] = mapped_column(ForeignKey("admin_accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditEntry(Base):
    """One admin action (sign-in, failed sign-in, token, tenant, setting, user change…).

    Append-only, like the event log. Changes to a tenant's directory are also events;
    both carry the request id, so the audit line and its events are found together.
    Failed sign-ins are also what login throttling counts.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    admin_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(48))
    tenant_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    target: Mapped[str | None] = mapped_column(String(320), nullable=True)
    detail: Mapped[Any] = mapped_column(JSON, nullable=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    correlation_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_tenant_at", "tenant_id", "at"),
        Index("ix_audit_log_action_target_at", "action", "target", "at"),
    )


class InstanceKey(Base):
    """Secrets the instance generates for itself on first use (the session-signing key),
    shared by every process through the database, unless the config sets them."""

    __tablename__ = "instance_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class EntraRegistration(Base):
    """A tenant's Entra ID app registration: where and how the poller signs in.

    The client secret or certificate is kept encrypted with the key from the settings
    (`azure_sync.encryption_key`); it is never logged and never returned by the API.
    """

    __tablename__ = "entra_registrations"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    directory_id: Mapped[str] = mapped_column(String(64))  # the Entra tenant id or domain
    client_id: Mapped[str] = mapped_column(String(64))
    secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_thumbprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    authority_host: Mapped[str] = mapped_column(String(255))
    graph_base_url: Mapped[str] = mapped_column(String(255))
    interval_minutes: Mapped[int] = mapped_column(Integer, default=10)
    scope_groups: Mapped[list[str]] = mapped_column(JSON, default=list)  # group object ids
    # direct: members of the chosen groups; transitive: also members of nested groups
    scope_group_mode: Mapped[str] = mapped_column(String(16), default="direct",
                                                  server_default="direct")
    scope_domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The scope changed in a way only a full round can apply (the next round is one).
    full_round_due: Mapped[bool] = mapped_column(Boolean, default=False,
                                                 server_default=text("false"))
    threshold_count: Mapped[int] = mapped_column(Integer, default=500)
    threshold_percent: Mapped[int] = mapped_column(Integer, default=20)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SyncState(Base):
    """Where a tenant's sync stands: delta cursors, the round in progress, its lease.

    A page's changes and the cursor that follows it commit together, so a round killed
    at any point resumes from the last committed page; the deltaLinks replace the old
    ones only when a round completes.
    """

    __tablename__ = "sync_state"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    users_delta_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    groups_delta_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_id: Mapped[int | None] = mapped_column(EventId, nullable=True)  # round in progress
    phase: Mapped[str | None] = mapped_column(String(16), nullable=True)  # users | groups
    next_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    pending_users_delta_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    full_round: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    quarantined_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AppThrottle(Base):
    """Graph asked this app registration to slow down: every tenant using the same
    client id waits until `paused_until`, so parallel tenants don't storm."""

    __tablename__ = "sync_app_throttle"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused_until: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SyncRun(Base):
    """One sync round: what it did, for the run log (UI, API) and the events'
    correlation id (`sync-run:<id>`)."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(16))  # incremental | full | preview | single
    status: Mapped[str] = mapped_column(String(24))  # running | succeeded | failed | …
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | manual | resync
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_sync_runs_tenant", "tenant_id", "id"),)


class SyncStaged(Base):
    """A destructive change a round held back (over the deletion threshold) until an
    admin approves or rejects the round."""

    __tablename__ = "sync_staged"

    run_id: Mapped[int] = mapped_column(EventId, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    object_id: Mapped[str] = mapped_column(String(512))
    action: Mapped[str] = mapped_column(String(16))  # disable | soft_delete | hard_delete | sweep
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class BillingProfile(Base):
    """A tenant's billing info (PRODUCT.md, "Billing"): what its invoices say and how its
    months are counted. The time zone is the tenant's own (`tenants.time_zone`)."""

    __tablename__ = "billing_profiles"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    company_name: Mapped[str] = mapped_column(String(200), default="")
    reference_number: Mapped[str] = mapped_column(String(100), default="")
    customer_type: Mapped[str] = mapped_column(String(100), default="")
    industry: Mapped[str] = mapped_column(String(100), default="")
    po_number: Mapped[str] = mapped_column(String(100), default="")
    policy: Mapped[str] = mapped_column(String(32), default="active_with_module")
    # The trial's last free day; billing starts on the 1st of the following month.
    trial_ends_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    non_profit: Mapped[bool] = mapped_column(Boolean, default=False)
    # [{"unit": "Hybrid" | "user", "plan": "standard" | "frontline", "price": "4.50"}]
    prices: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)


class BillingClose(Base):
    """One closed month of one tenant (or an attempt at closing it).

    Closing writes its lines in batches under state `building`, then flips the row to
    `closed` in one short transaction. The partial unique index on (tenant, month,
    version) over rows that are not `building` is what makes a close exactly-once
    across processes: a second process's flip fails, and its attempt is deleted. A
    reissue is the next version; the one it replaces becomes `superseded` and stays
    readable. Everything that went into the result is frozen here and in the hash.
    """

    __tablename__ = "billing_closes"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(12))  # building | closed | superseded
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_by: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # a reissue's reason
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Events and activity recorded up to here are in; the high-water marks name the
    # last event and activity row that were.
    cutoff: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    event_high_water: Mapped[int] = mapped_column(EventId, default=0)
    activity_high_water: Mapped[int] = mapped_column(EventId, default=0)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    users_counted: Mapped[int] = mapped_column(Integer, default=0)
    users_billable: Mapped[int] = mapped_column(Integer, default=0)
    totals: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    invoice: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the close noticed: late events too old to adjust, a quarantined sync…
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index(
            "uq_billing_closes_version",
            "tenant_id",
            "month",
            "version",
            unique=True,
            sqlite_where=text("state <> 'building'"),
            postgresql_where=text("state <> 'building'"),
        ),
        Index("ix_billing_closes_tenant_month", "tenant_id", "month", "version"),
    )


class BillingLine(Base):
    """One user's decision in a close: billable or not, why, under which plan, for what."""

    __tablename__ = "billing_lines"

    close_id: Mapped[int] = mapped_column(
        ForeignKey("billing_closes.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(512))
    billable: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(32))
    plan: Mapped[str] = mapped_column(String(16))
    audience: Mapped[str] = mapped_column(String(8))
    modules: Mapped[str] = mapped_column(Text, default="")  # effective, "\x1f"-joined
    units: Mapped[str] = mapped_column(Text, default="")  # priced units, "\x1f"-joined
    # The user's state at the month's end (billing/carry.py): where the next close starts.
    state: Mapped[str | None] = mapped_column(Text, nullable=True)


class BillingAdjustment(Base):
    """A correction to an earlier closed month, issued by a later close: a reversal (-1)
    of what was billed or the corrected line (+1), priced at that month's prices."""

    __tablename__ = "billing_adjustments"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    close_id: Mapped[int] = mapped_column(ForeignKey("billing_closes.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(36))
    month: Mapped[str] = mapped_column(String(7))  # the month corrected
    user_id: Mapped[str] = mapped_column(String(36))
    user_name: Mapped[str] = mapped_column(String(512))
    sign: Mapped[int] = mapped_column(Integer)
    units: Mapped[str] = mapped_column(Text)
    audience: Mapped[str] = mapped_column(String(8))
    plan: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    amount: Mapped[str] = mapped_column(String(24))

    __table_args__ = (
        Index("ix_billing_adjustments_close", "close_id", "id"),
        Index("ix_billing_adjustments_month_user", "tenant_id", "month", "user_id"),
    )


class Activity(Base):
    """A user's sign-in, visit, chat or notification, as the workplace reported it
    (`POST /api/v1/tenants/{id}/activity`): what the `monthly_active` policy reads.

    Append-only like the event log, and kept apart from it: there can be many per user
    and day, and only the billing close reads them.
    """

    __tablename__ = "activity_log"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))  # sign_in | visit | chat | notification
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_activity_user", "tenant_id", "user_id", "occurred_at"),
        Index("ix_activity_recorded", "tenant_id", "recorded_at"),
    )


class ReportingKey(Base):
    """A hosting partner's provisioning key for the reporting API (/reporting/v1):
    a SHA-256 digest, shown once when made, revocable."""

    __tablename__ = "reporting_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(320))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BillingMailOutbox(Base):
    """The monthly e-mail report of one close, waiting to be sent (billing/mail.py).

    Written in the close's own flip transaction, so a close that stands always has its
    report and a close that lost has none; sent later by the scheduler, so an SMTP
    server that is down never holds up or fails a close. A sender claims a row by
    moving `next_attempt_at` past its lease (a compare-and-set on `attempts`).
    """

    __tablename__ = "billing_mail_outbox"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    close_id: Mapped[int] = mapped_column(
        ForeignKey("billing_closes.id", ondelete="CASCADE"), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    month: Mapped[str] = mapped_column(String(7))
    state: Mapped[str] = mapped_column(String(8))  # pending | sent | failed
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sent_to: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_billing_mail_outbox_due", "state", "next_attempt_at"),)
