"""The directory's current state and the append-only event log, written only by the
directory service (`connector.directory`, `connector.events`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, CurrentTxid, EventId, TxId, UTCDateTime


class User(Base):
    """A user's current state. `data` holds the SCIM profile attributes; the columns
    hold what is indexed, filtered on, or owned by the status rules."""

    __tablename__ = "users"

    # No foreign key to tenants (nor from user_values to users, nor from the two logs to
    # tenants): each is checked row by row, a quarter of PostgreSQL's work in a sync
    # round that creates users in bulk (docs/benchmarks.md, "Foreign keys…"). Every row
    # of these tables is written by the directory service, for a tenant and user it holds;
    # nothing deletes a user or a tenant row, so the cascade they carried never ran.
    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
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
        # No foreign key to users: see User.tenant_id.
        Index("ix_user_values_lookup", "tenant_id", "attr", "value_norm"),
    )


class UserSearchWord(Base):
    """One word a user is found by on the admin users page: folded (case and accents
    gone) from its names and e-mail addresses by `connector.search_words`, rewritten
    with them by the directory service. A search reads each of its words as one range
    of the primary key (a prefix match); removed users keep their words (the search
    reads live users only)."""

    __tablename__ = "user_search_words"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    word: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)

    __table_args__ = (
        # No foreign key to users: see User.tenant_id.
        # A user's words (rewritten on a rename; a search's further words tested per user).
        # Without the word: PostgreSQL then stores each user once (B-tree deduplication),
        # 13 MB instead of 75 MB at 100,000 users; on SQLite it holds the key anyway.
        Index("ix_user_search_words_user", "tenant_id", "user_id"),
        # On SQLite the primary key is the table: no third copy of every row.
        {"sqlite_with_rowid": False},
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
    tenant_id: Mapped[str] = mapped_column(String(36))  # no foreign key: User.tenant_id
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
    # Why a partner admin recorded a back-dated correction; None for every other event.
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The writing transaction's id (PostgreSQL: pg_current_xact_id(), filled by the
    # server default, so COPY, INSERT and the bulk WITH all get it; SQLite: 0, its single
    # writer commits in id order). The event feed orders by (txid, id) and serves only
    # what no running transaction can still add to (connector.feed).
    txid: Mapped[int] = mapped_column(TxId, server_default=CurrentTxid())

    __table_args__ = (
        # The event feed (connector.feed): a tenant's in feed order.
        Index("ix_events_feed_tenant", "tenant_id", "txid", "id"),
        # Every tenant's feed in feed order, on PostgreSQL (a partner-wide page is one
        # range of it, whatever the number of tenants); SQLite's primary key serves
        # that order there (txid is 0).
        Index("ix_events_feed", "txid", "id").ddl_if(dialect="postgresql"),
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

