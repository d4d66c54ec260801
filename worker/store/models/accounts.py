"""The four tables of the original design, widened by later migrations: users, their
registered OpenRouter keys, each key's usage per day and model, and API tokens (``users``,
``api_keys``, ``usage_stats``, ``api_tokens``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import conv

from worker.store.models.base import (
    BIG_ID,
    MONEY,
    SOURCE_ACTIVITY,
    Base,
    UTCDateTime,
    _created_at,
    _is_active,
    utcnow,
)


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
    # answer is neither validated nor stored again (see worker.sync.run).
    activity_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    activity_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Added by 0005: an answer held back because it would delete too much of this key's
    # history (the SHA-256 of its body, and since when it has been seen), and the keyed
    # fingerprint that keeps one OpenRouter key from being registered twice (worker.vault.crypto).
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
