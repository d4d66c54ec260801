"""The guards' audit trail (migration 0010): every change the watcher plans, sends or undoes on
an OpenRouter key, with the key's settings before and after, and what triggered it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models.base import MONEY, Base, UTCDateTime

# guard_actions.status: planned (dry-run: never sent) | pending (to send) | sent | failed
# (refused: never retried) | abandoned (not sent within [live] give_up_hours) | restored
# (undone by the watcher) | kept (not undone: the key changed since, or restore is manual)
PLANNED, PENDING, SENT, FAILED, ABANDONED, RESTORED, KEPT = (
    "planned",
    "pending",
    "sent",
    "failed",
    "abandoned",
    "restored",
    "kept",
)


class GuardAction(Base):
    """One action on one key: its rule, the key, the settings before and wanted, its fate.

    At most one per (rule, account, key, period), a database constraint: however many polls,
    restarts or daemons see the same rule fire for the same key in the same day or month."""

    __tablename__ = "guard_actions"
    __table_args__ = (UniqueConstraint("rule", "account_id", "key_hash", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # An [[alerts]] rule's name, or the [[limits]] table's label.
    rule: Mapped[str] = mapped_column(String(200), nullable=False)
    source: Mapped[str] = mapped_column(String(10), nullable=False)  # alert | limits
    # The registered management key of the key's account (the one that sends the change).
    account_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False, index=True
    )
    key_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    key_name: Mapped[str] = mapped_column(String(255), nullable=False)
    action: Mapped[str] = mapped_column(String(20), nullable=False)  # disable | cap | limit
    # The rule's period (a UTC day or month) or, for a [[limits]] change, when it was planned.
    period: Mapped[str] = mapped_column(String(40), nullable=False)
    mode: Mapped[str] = mapped_column(String(10), nullable=False)  # dry-run | enforce
    status: Mapped[str] = mapped_column(String(10), nullable=False, index=True)
    restore: Mapped[str] = mapped_column(String(15), nullable=False)  # next_period | manual
    # The key's settings (JSON: disabled, limit, limit_reset, include_byok_in_limit,
    # updated_at) when the action was planned, the ones it sets, and what OpenRouter answered.
    before: Mapped[str] = mapped_column(Text, nullable=False)
    wanted: Mapped[str] = mapped_column(Text, nullable=False)
    after: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What triggered it: the rule's metric, threshold and the figure reached.
    metric: Mapped[str | None] = mapped_column(String(40), nullable=True)
    threshold: Mapped[str | None] = mapped_column(String(40), nullable=True)
    value: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_events.id", ondelete="SET NULL"), nullable=True
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    restored_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
