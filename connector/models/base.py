"""The declarative base, naming conventions and column types every table uses."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    MetaData,
    Table,
    TypeDecorator,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.expression import ColumnElement

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
# A writing transaction's id (connector.feed): BIGINT on PostgreSQL, INTEGER on SQLite.
TxId = BigInteger().with_variant(Integer(), "sqlite")


class CurrentTxid(ColumnElement[int]):
    """The server default of `events.txid`: the writing transaction's 64-bit id on
    PostgreSQL (xid8 has no cast to bigint but through text), 0 on SQLite."""

    inherit_cache = True
    type = TxId


@compiles(CurrentTxid)
def _current_txid_default(element: CurrentTxid, compiler: Any, **kw: Any) -> str:
    return "0"


@compiles(CurrentTxid, "postgresql")
def _current_txid_postgresql(element: CurrentTxid, compiler: Any, **kw: Any) -> str:
    return "(pg_current_xact_id()::text)::bigint"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)

    if TYPE_CHECKING:
        # Every model maps one Table (none a join or a subquery), which the core
        # statements on `Model.__table__` rely on; SQLAlchemy only promises a FromClause.
        __table__: ClassVar[Table]

