"""The tables, as SQLAlchemy 2 typed declarative models.

The four tables of the original design (``users``, ``api_keys``, ``usage_stats``,
``api_tokens``) plus the sync ledger (``sync_runs``, ``sync_key_results``) added by migration
0002. Alembic owns the schema: these models are what the migrations must produce, and a test
asserts that Alembic's autogenerate comparison between the two is empty.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import conv

from worker.days import utc_now

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
    """The current time, timezone-aware, in UTC (:func:`worker.days.utc_now`)."""
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


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("email LIKE '%_@__%.__%'", name=conv("chk_email_format")),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(255), nullable=False, unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(),
        default=utcnow,
        onupdate=utcnow,
        server_default=text("CURRENT_TIMESTAMP"),
        nullable=True,
    )
    is_active: Mapped[bool] = _is_active()
    # Added by 0006: an admin's API token sees every user's keys and accounts, not only its own.
    is_admin: Mapped[bool] = mapped_column(
        Boolean(), default=False, server_default=false(), nullable=False
    )

    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    api_tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"<User id={self.id} email={self.email!r}>"


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    key_encrypted: Mapped[str] = mapped_column(Text, nullable=False)  # AES-256-GCM, see crypto
    is_active: Mapped[bool] = mapped_column(
        Boolean(), default=True, server_default=true(), nullable=True, index=True
    )
    created_at: Mapped[dt.datetime] = _created_at()
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Added by 0002: "management", "ordinary" or NULL (not known yet). Learned from GET /key
    # when the key is added and from /activity's 200 or 403 on every sync.
    kind: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # Added by 0004 and 0005: SHA-256 of the window and body of the last whole-window
    # /activity answer stored for this key, and its number of (day, model) rows: an identical
    # answer is neither validated nor stored again (see worker.sync).
    activity_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    activity_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Added by 0005: an answer held back because it would delete too much of this key's
    # history (the SHA-256 of its body, and since when it has been seen), and the keyed
    # fingerprint that keeps one OpenRouter key from being registered twice (worker.crypto).
    suspicious_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    suspicious_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # Added by 0007, for an account's management key: how far back its year of history has
    # been imported from /analytics/query (the oldest day done), and when it was complete.
    history_reached: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    history_done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    user: Mapped[User] = relationship(back_populates="api_keys")
    usage_stats: Mapped[list[UsageStats]] = relationship(
        back_populates="api_key", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:  # never the key itself
        return f"<ApiKey id={self.id} user_id={self.user_id} name={self.name!r}>"


class UsageStats(Base):
    __tablename__ = "usage_stats"
    __table_args__ = (
        UniqueConstraint("api_key_id", "date", "model", name=conv("uniq_key_date_model")),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False, index=True
    )
    date: Mapped[dt.date] = mapped_column(Date, nullable=False, index=True)
    model: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    # BIGINT on PostgreSQL since 0005 (SQLite's INTEGER is 64-bit already).
    requests_count: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        default=0,
        server_default=text("0"),
        nullable=True,
    )
    # BIGINT since 0002: one busy account can pass 2^31 tokens on one model in a day.
    tokens_input: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default=text("0"), nullable=True
    )
    tokens_output: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default=text("0"), nullable=True
    )
    cost: Mapped[Decimal] = mapped_column(
        MONEY, default=Decimal(0), server_default=text("0.0"), nullable=True
    )
    created_at: Mapped[dt.datetime] = _created_at()
    # Added by 0002.
    tokens_reasoning: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default=text("0"), nullable=True
    )
    byok_cost: Mapped[Decimal] = mapped_column(
        MONEY, default=Decimal(0), server_default=text("0.0"), nullable=True
    )
    # Added by 0007: where the row came from, "activity" or "analytics" (a later /activity
    # answer for the day replaces analytics rows).
    source: Mapped[str] = mapped_column(
        String(10), nullable=False, default=SOURCE_ACTIVITY, server_default=SOURCE_ACTIVITY
    )

    api_key: Mapped[ApiKey] = relationship(back_populates="usage_stats")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[dt.datetime] = _created_at()
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    is_active: Mapped[bool] = mapped_column(
        Boolean(), default=True, server_default=true(), nullable=True, index=True
    )

    user: Mapped[User] = relationship(back_populates="api_tokens")


class SyncRun(Base):
    """One sync or backfill: when, why, and how it ended."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # sync | backfill | schedule
    trigger: Mapped[str] = mapped_column(String(20), nullable=False)
    # running | ok | failed (some key failed) | interrupted
    status: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    keys_ok: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    keys_failed: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )

    key_results: Mapped[list[SyncKeyResult]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class SyncKeyResult(Base):
    """The outcome of one key within one run."""

    __tablename__ = "sync_key_results"
    __table_args__ = (Index(None, "api_key_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("sync_runs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    api_key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
    )
    # ok | failed
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    rows_inserted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rows_updated: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rows_unchanged: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rows_deleted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    http_requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    # Added by 0005: a failure's stable reason code (worker.outcomes), NULL when ok.
    reason: Mapped[str | None] = mapped_column(String(40), nullable=True)

    run: Mapped[SyncRun] = relationship(back_populates="key_results")


class AccountKey(Base):
    """One OpenRouter key of an account, as the account's management key lists it (``GET
    /keys``). Added by 0007. A key no longer listed is kept, marked ``gone_at``, with its
    history; ``registered_key_id`` links it to the same key registered as an ordinary key."""

    __tablename__ = "account_keys"
    __table_args__ = (UniqueConstraint("account_id", "hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False, index=True
    )
    hash: Mapped[str] = mapped_column(String(128), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    label: Mapped[str] = mapped_column(String(255), nullable=False)
    workspace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean(), nullable=False, default=False)
    limit: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    limit_reset: Mapped[str | None] = mapped_column(String(20), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_upstream_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_upstream_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    gone_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    registered_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # The key's /keys usage figure at its last successful history fetch, and when: an
    # unchanged figure means nothing new to fetch (see worker.catalogue).
    fetched_usage: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    fetched_daily: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    fetched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The last fetch of the key's history failed: why (one line), until one succeeds.
    fetch_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The key's last whole-window answer stored (see ApiKey.activity_digest).
    activity_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    activity_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    history_reached: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    history_done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class KeyUsageStats(Base):
    """Per-day, per-model usage of a catalogued key that is not registered (added by 0007):
    the same shape as ``usage_stats``, keyed by the catalogue entry. A registered (linked)
    key's rows live in ``usage_stats`` under its own ``api_keys.id`` instead."""

    __tablename__ = "key_usage_stats"
    __table_args__ = (
        UniqueConstraint("account_key_id", "date", "model"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    account_key_id: Mapped[int] = mapped_column(
        ForeignKey("account_keys.id", ondelete="CASCADE"), nullable=False
    )
    date: Mapped[dt.date] = mapped_column(Date, nullable=False, index=True)
    model: Mapped[str] = mapped_column(String(100), nullable=False)
    requests_count: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), nullable=False, default=0
    )
    tokens_input: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    tokens_output: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    tokens_reasoning: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    byok_cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    source: Mapped[str] = mapped_column(
        String(10), nullable=False, default=SOURCE_ACTIVITY, server_default=SOURCE_ACTIVITY
    )
    created_at: Mapped[dt.datetime] = _created_at()


# --- live figures and alerts (migration 0008) ------------------------------------------------


class LiveSubject(Base):
    """Something the live poll watches: an account (a registered management key; its totals
    and balance) or one OpenRouter key (of an account, by its ``/keys`` hash; or a registered
    ordinary key polled with ``GET /key``). ``key_hash`` is '' for the registered key itself."""

    __tablename__ = "live_subjects"
    __table_args__ = (UniqueConstraint("api_key_id", "key_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
    )
    key_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    scope: Mapped[str] = mapped_column(String(10), nullable=False)  # account | key
    name: Mapped[str] = mapped_column(String(255), nullable=False)  # as OpenRouter names it
    listed: Mapped[bool] = mapped_column(Boolean(), nullable=False, default=True)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    # The newest snapshot (no foreign key: snapshots reference subjects, not both ways).
    snapshot_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # On the registered key's own row: its last successful poll and the last poll's error.
    polled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    poll_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class LiveSnapshot(Base):
    """A subject's running totals as OpenRouter reported them, stored only when one changed."""

    __tablename__ = "live_snapshots"
    __table_args__ = (
        Index(None, "subject_id", "taken_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("live_subjects.id", ondelete="CASCADE"), nullable=False
    )
    taken_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    usage: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    usage_daily: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    usage_weekly: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    usage_monthly: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    byok_usage: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    byok_usage_daily: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    byok_usage_weekly: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    byok_usage_monthly: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    spend_limit: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    limit_remaining: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    balance: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)  # accounts only
    disabled: Mapped[bool | None] = mapped_column(Boolean(), nullable=True)


class AlertState(Base):
    """The last evaluation of one (rule, subject, threshold), and whether it has fired."""

    __tablename__ = "alert_states"
    __table_args__ = (UniqueConstraint("rule", "subject", "threshold"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String(100), nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False)  # e.g. key:3:<hash>
    threshold: Mapped[str] = mapped_column(String(40), nullable=False)  # exact decimal text
    subject_name: Mapped[str] = mapped_column(String(255), nullable=False)
    value: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    evaluated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    # Crossing metrics: fired and not re-armed yet. Period metrics: at or past the threshold.
    firing: Mapped[bool] = mapped_column(Boolean(), nullable=False, default=False)
    period: Mapped[str | None] = mapped_column(String(20), nullable=True)  # when it last fired
    fired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AlertEvent(Base):
    """An alert that fired (or a daily digest): what the notifications say."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String(100), nullable=False)
    metric: Mapped[str] = mapped_column(String(40), nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    subject_name: Mapped[str] = mapped_column(String(255), nullable=False)
    threshold: Mapped[str] = mapped_column(String(40), nullable=False)
    value: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    period: Mapped[str] = mapped_column(String(20), nullable=False)
    fired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)

    notifications: Mapped[list[AlertNotification]] = relationship(
        back_populates="event", cascade="all, delete-orphan", passive_deletes=True
    )


class AlertNotification(Base):
    """One event for one channel: the outbox row, its attempts and their last result."""

    __tablename__ = "alert_notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("alert_events.id", ondelete="CASCADE"), nullable=False, index=True
    )
    channel: Mapped[str] = mapped_column(String(100), nullable=False)
    # pending (not tried yet) | failed (tried; retried at the next poll) | sent | abandoned
    status: Mapped[str] = mapped_column(String(10), nullable=False, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    event: Mapped[AlertEvent] = relationship(back_populates="notifications")
