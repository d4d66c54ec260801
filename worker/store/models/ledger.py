"""The sync ledger (migration 0002): every run and every key's outcome in it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.store.models.base import (
    Base,
    UTCDateTime,
    utcnow,
)


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
    # Added by 0011: the daemon that ran it ([ha] instance_name; None: a command).
    instance: Mapped[str | None] = mapped_column(String(200), nullable=True)

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
    # Added by 0005: a failure's stable reason code (worker.core.outcomes), NULL when ok.
    reason: Mapped[str | None] = mapped_column(String(40), nullable=True)

    run: Mapped[SyncRun] = relationship(back_populates="key_results")
