"""The column types and conventions every table shares: UTC timestamps, exact money, ids,
the naming convention of constraints, and the declarative base."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    Numeric,
    TypeDecorator,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from worker.core.days import utc_now

# Stable, explicit names for every index and constraint, so migrations can refer to them and
# the same schema has the same names on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MONEY_SCALE = 9
# usage_stats.source / key_usage_stats.source
SOURCE_ACTIVITY = "activity"
SOURCE_ANALYTICS = "analytics"
# api_keys.kind: what OpenRouter said the key is (NULL: not known yet).
KIND_MANAGEMENT = "management"
KIND_ORDINARY = "ordinary"
# A 64-bit id on PostgreSQL (INSERT … ON CONFLICT burns a sequence value per attempted row);
# SQLite's INTEGER PRIMARY KEY is already 64-bit and must stay INTEGER to be the rowid.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC (:func:`worker.core.days.utc_now`)."""
    return utc_now()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always returned timezone-aware in UTC.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive
    UTC (which is also what its ``CURRENT_TIMESTAMP`` default produces).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column: attach a timezone")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Money(TypeDecorator[Decimal]):
    """US dollars as ``NUMERIC(18, 9)``, always read back as an exact ``Decimal``.

    OpenRouter reports up to 9 decimals. Migration 0001 created ``cost`` as NUMERIC(10, 6) (the
    original design); 0002 widened it. SQLite stores NUMERIC as a binary float, so there the
    value is read as a float and quantized back to 9 decimals, which restores exactly what was
    written for any amount below about ten million dollars (15 significant digits).
    """

    impl = Numeric(18, MONEY_SCALE)
    cache_ok = True
    _QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            # asdecimal=False: SQLAlchemy's own float→Decimal path warns; we quantize below.
            return dialect.type_descriptor(Numeric(18, MONEY_SCALE, asdecimal=False))
        return dialect.type_descriptor(Numeric(18, MONEY_SCALE))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money must be a Decimal, not a float")
        value = Decimal(value)
        return float(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return to_money(value)


def to_money(value: Any) -> Decimal | None:
    """A database value (Decimal, float, int or str) as a Decimal with 9 decimals."""
    if value is None:
        return None
    if isinstance(value, float):
        value = f"{value:.{MONEY_SCALE}f}"
    return Decimal(value).quantize(Money._QUANTUM)


MONEY = Money()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created_at() -> Mapped[dt.datetime]:
    return mapped_column(
        UTCDateTime(), default=utcnow, server_default=text("CURRENT_TIMESTAMP"), nullable=True
    )


def _is_active() -> Mapped[bool]:
    return mapped_column(Boolean(), default=True, server_default=true(), nullable=True)
