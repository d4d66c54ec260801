"""The account catalogue (migration 0007): every key an account's management key lists
(``account_keys``) and a catalogued key's own usage per day and model (``key_usage_stats``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models.base import (
    BIG_ID,
    MONEY,
    SOURCE_ACTIVITY,
    Base,
    UTCDateTime,
    _created_at,
)


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
    # Added by 0010: whether BYOK spend counts against the limit, and when disabled, limit,
    # limit_reset and this were last read (by a sync's or a poll's /keys).
    include_byok_in_limit: Mapped[bool | None] = mapped_column(Boolean(), nullable=True)
    settings_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
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
    # unchanged figure means nothing new to fetch (see worker.sync.catalogue).
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
