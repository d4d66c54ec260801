"""OpenRouter's analytics budget, kept in the database so that every process counts it: at most
64 ``/analytics/query`` requests per account in any 60 s.

Each attempt reserves its turn first (:func:`reserve`, one short transaction): the account's
requests of the last minute are counted and, when fewer than the limit, one more is recorded;
otherwise the caller learns how long until the oldest leaves the window. Reservations of one
account are serialised across processes (PostgreSQL: an advisory lock for the transaction;
SQLite: the write lock, taken by the first statement), so two processes never both take the
64th turn. Times are this host's clock (:func:`worker.core.days.utc_now`): hosts sharing a
PostgreSQL database should keep their clocks in step (NTP); a 429 that a skew lets through is
waited out by the retry policy.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from worker.core.days import utc_now
from worker.openrouter.pacing import ANALYTICS_PER_MINUTE, ANALYTICS_WINDOW
from worker.store.db import transaction
from worker.store.models import AnalyticsRequest, UTCDateTime

# pg_advisory_xact_lock(int, int): this constant ("orwb") and the account's id.
_LOCK_CLASS = 0x6F727762
_MARGIN = 0.05  # seconds past the oldest request's minute, so the turn is surely free


def reserve(
    session: Session, account_id: int, now: dt.datetime, *, limit: int, window: float
) -> float:
    """Take one turn of ``account_id``'s budget at ``now``: 0.0 when taken (recorded), else the
    seconds to wait before asking again. In the caller's transaction, which it must commit."""
    since = now - dt.timedelta(seconds=window)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:cls, :account)"),
            {"cls": _LOCK_CLASS, "account": account_id},
        )
    # First a write (SQLite takes its write lock here, so the count below cannot change under
    # us), which also forgets the requests that have left the window.
    session.execute(
        delete(AnalyticsRequest).where(
            AnalyticsRequest.account_id == account_id, AnalyticsRequest.sent_at <= since
        )
    )
    sent, oldest = session.execute(
        select(func.count(), func.min(AnalyticsRequest.sent_at, type_=UTCDateTime())).where(
            AnalyticsRequest.account_id == account_id
        )
    ).one()
    if sent < limit:
        session.execute(insert(AnalyticsRequest).values(account_id=account_id, sent_at=now))
        return 0.0
    return max(_MARGIN, (oldest - since).total_seconds() + _MARGIN)


class AnalyticsBudget:
    """One account's budget as the OpenRouter client's :class:`~worker.openrouter.pacing.Pace`:
    each :meth:`acquire` waits until a turn is free and takes it. Every process's requests
    count, so a 429 anyway is waited out (``waits_out``)."""

    waits_out = True

    def __init__(
        self,
        factory: sessionmaker[Session],
        account_id: int,
        *,
        limit: int = ANALYTICS_PER_MINUTE,
        period: float = ANALYTICS_WINDOW,
        clock: Callable[[], dt.datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.factory = factory
        self.account_id = account_id
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> float:
        """Wait for a turn of the account's budget; return the seconds waited."""
        waited = 0.0
        while True:
            with transaction(self.factory) as session:
                pause = reserve(
                    session, self.account_id, self._clock(), limit=self.limit, window=self.period
                )
            if not pause:
                return waited
            self._sleep(pause)
            waited += pause
