"""The live poll's subjects and snapshots, and the alerts' states, events and
notification outbox (migration 0008)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.store.models.base import (
    BIG_ID,
    MONEY,
    Base,
    UTCDateTime,
)


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
    # Added by 0011: every UPDATE compares and moves it (SQLAlchemy's version counter), so of
    # two daemons evaluating at once only one fires; the other's transaction fails whole.
    version: Mapped[int] = mapped_column(
        Integer, nullable=False, default=1, server_default=text("1")
    )

    __mapper_args__ = {"version_id_col": version}


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
