"""The analytics rate budget (migration 0009): when each ``/analytics/query`` request was sent,
per account, for the last minute; every process counts them before it sends."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models.base import BIG_ID, Base, UTCDateTime


class AnalyticsRequest(Base):
    """One request sent to ``/analytics/query`` through an account's management key."""

    __tablename__ = "analytics_requests"
    __table_args__ = (Index(None, "account_id", "sent_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
    )
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
