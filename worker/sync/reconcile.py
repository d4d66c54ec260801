"""Reconcile: does ``/analytics/query`` agree with the stored ``/activity`` rows?

For the days both sources cover (the last days of ``/activity``'s window), each registered
account's analytics cost per day is compared with the cost stored from ``/activity`` for that
account and day. A day whose stored rows came from analytics is skipped (it would agree with
itself). Nothing is written: this is a check an operator runs, and ``reconcile`` exits 1 when
any day differs by more than :data:`TOLERANCE`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.core.days import completed_window, span
from worker.core.errors import NotFoundError, UsageError
from worker.openrouter import OpenRouterClient
from worker.store.budget import AnalyticsBudget
from worker.store.keys import ActiveKey, active_keys
from worker.store.models import (
    KIND_MANAGEMENT,
    SOURCE_ACTIVITY,
    SOURCE_ANALYTICS,
    ApiKey,
    UsageStats,
)
from worker.sync import history
from worker.vault.crypto import Keyring

TOLERANCE = Decimal("0.000001")  # USD: below this, two sums are the same spend
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class DayCheck:
    """One account-day: the cost stored from ``/activity`` and the cost analytics reports."""

    date: dt.date
    stored: Decimal
    analytics: Decimal

    @property
    def difference(self) -> Decimal:
        return self.analytics - self.stored

    @property
    def exceeds(self) -> bool:
        return abs(self.difference) > TOLERANCE


@dataclass(slots=True)
class AccountCheck:
    account_id: int
    account_name: str
    days: list[DayCheck] = field(default_factory=list)
    skipped: int = 0  # days whose stored rows came from analytics

    @property
    def differences(self) -> list[DayCheck]:
        return [day for day in self.days if day.difference != 0]


def reconcile_days(today: dt.date, days: int) -> tuple[dt.date, dt.date]:
    """The last ``days`` completed days (1 … the /activity window), or a UsageError."""
    first, last = completed_window(today)
    window = (last - first).days + 1
    if not 1 <= days <= window:
        raise UsageError(
            f"--days must be between 1 and {window} (the days /activity covers), got {days}"
        )
    return last - dt.timedelta(days=days - 1), last


def accounts_to_check(session: Session, account_id: int | None) -> list[ActiveKey]:
    """The active management keys (or the one asked for, which must be one)."""
    keys = [key for key in active_keys(session) if key.kind == KIND_MANAGEMENT]
    if account_id is None:
        return keys
    chosen = [key for key in keys if key.id == account_id]
    if not chosen:
        if session.get(ApiKey, account_id) is None:
            raise NotFoundError(
                f"no API key with id {account_id}: see `openrouter-watcher keys list`"
            )
        raise UsageError(
            f"key {account_id} is not an active management key (an account): "
            "see the KIND column of `openrouter-watcher keys list`"
        )
    return chosen


def reconcile(
    factory: sessionmaker[Session],
    client: OpenRouterClient,
    keyring: Keyring,
    accounts: Sequence[ActiveKey],
    first: dt.date,
    last: dt.date,
) -> list[AccountCheck]:
    """Compare analytics with the stored ``/activity`` rows, per account and day."""
    checks = []
    for account in accounts:
        secret = keyring.decrypt(account.key_encrypted, user_id=account.user_id, key_id=account.id)
        try:
            subject = history.account_subject(account)
            answered: dict[dt.date, Decimal] = {}
            budget = AnalyticsBudget(factory, account.id)  # the sync's requests count too
            for rows, _lo, _hi in history.answers(client, secret, subject, first, last, budget):
                for row in rows:
                    answered[row.date] = answered.get(row.date, ZERO) + row.cost
        finally:
            del secret
        with factory() as session:
            stored = _stored(session, account.id, first, last)
        check = AccountCheck(account.id, account.name)
        for day in span(first, last):
            cost, source = stored.get(day, (ZERO, SOURCE_ACTIVITY))
            if source == SOURCE_ANALYTICS:
                check.skipped += 1
            else:
                check.days.append(DayCheck(day, cost, answered.get(day, ZERO)))
        checks.append(check)
    return checks


def _stored(
    session: Session, account_id: int, first: dt.date, last: dt.date
) -> dict[dt.date, tuple[Decimal, str]]:
    """Per day: the account's stored cost, and ``analytics`` when any of the day's rows came
    from analytics (then the day is not compared)."""
    query = (
        select(UsageStats.date, UsageStats.cost, UsageStats.source)
        .where(UsageStats.api_key_id == account_id)
        .where(UsageStats.date >= first, UsageStats.date <= last)
    )
    out: dict[dt.date, tuple[Decimal, str]] = {}
    # Summed here in Decimal: a month of one account's rows is small, and exact either way.
    for day, cost, source in session.execute(query):
        total, seen = out.get(day, (ZERO, SOURCE_ACTIVITY))
        out[day] = (
            total + (cost or ZERO),
            SOURCE_ANALYTICS if SOURCE_ANALYTICS in (seen, source) else SOURCE_ACTIVITY,
        )
    return out
