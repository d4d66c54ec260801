"""The live figures of every account and key, read from the snapshots; no network.

Definitions (UTC days and months, like OpenRouter's):

- **today**, **month**: OpenRouter's ``usage_daily`` / ``usage_monthly`` (credits, BYOK
  apart) at the last successful poll, if that poll was today (this month); None otherwise.
  An account's are the sums over the keys ``/keys`` lists (a key deleted today leaves them).
- **mean daily**: the mean spend of the last 7 complete days. An account's comes from the
  stored daily history (``usage_stats`` of its management key, exact); a key's (and an
  account without history) from its snapshots: (usage at 00:00 today − usage 7 days before)
  ÷ 7, or over the history there is when it is shorter (at least one day; else None).
- **burn rate**: spend per hour over the last ``[live] burn_rate_hours`` before the last poll.
- **runway**: days left at the mean: an account's balance ÷ mean, a key's limit remaining ÷
  mean (None without a limit, or when the mean is 0).
- **month-end projection**: month to date + mean × the days left in the month (from now,
  today's remainder included).
- **spike**: today ÷ (mean × the share of the day gone, at least one hour) × 100.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session, aliased

from worker.core.days import utc_now
from worker.reports.report import sum_money
from worker.store.models import ApiKey, LiveSnapshot, LiveSubject, UsageStats, User, to_money
from worker.store.snapshots import SELF

MEAN_DAYS = 7
HUNDRED = Decimal(100)
TENTH = Decimal("0.1")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Figures:
    """One account or key, as of its last successful poll (money in USD, exact)."""

    subject: str  # stable id: account:ID, key:ID:HASH (a key of account ID), key:ID (ordinary)
    scope: str  # account | key | alias (a registered ordinary key listed by an account)
    api_key_id: int  # the registered key: the account's management key, or the ordinary key
    key_hash: str  # OpenRouter's id of the key within the account ('' for the registered key)
    name: str  # the key's name on OpenRouter, or the registered name
    account: str | None  # the registered account's name (None for an ordinary key)
    user: str  # the owner's email
    listed: bool
    disabled: bool | None
    as_of: dt.datetime | None  # the last successful poll
    poll_error: str | None
    today: Decimal | None
    month: Decimal | None
    usage: Decimal | None  # all time (an account's: /credits total_usage)
    limit: Decimal | None
    limit_remaining: Decimal | None
    limit_used_percent: Decimal | None
    balance: Decimal | None
    mean_daily: Decimal | None
    burn_rate_per_hour: Decimal | None
    runway_days: Decimal | None
    month_end_projection: Decimal | None
    spike_percent: Decimal | None


def _usage_at(subject: Any, when: Any) -> Any:
    """The subject's usage as of ``when``: its newest snapshot taken at or before it."""
    snap = aliased(LiveSnapshot)
    return (
        select(snap.usage)
        .where(snap.subject_id == subject.id, snap.taken_at <= when)
        .order_by(snap.taken_at.desc(), snap.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _first(subject: Any, column: str) -> Any:
    snap = aliased(LiveSnapshot)
    return (
        select(getattr(snap, column))
        .where(snap.subject_id == subject.id)
        .order_by(snap.taken_at, snap.id)
        .limit(1)
        .scalar_subquery()
    )


@functools.cache
def _base_query() -> Any:
    """Every subject with its newest snapshot and the usages the figures are computed from; the
    instants as bound parameters. Built once: building its aliased subqueries cost more than
    running the query (20 ms against a few, on every status, scrape and dashboard)."""
    subject = LiveSubject
    source = aliased(LiveSubject)  # the registered key's own row: when it was polled
    snap = aliased(LiveSnapshot)
    return (
        select(
            subject.id,
            subject.api_key_id,
            subject.key_hash,
            subject.scope,
            subject.name,
            subject.listed,
            ApiKey.name.label("registered"),
            User.email,
            source.polled_at,
            source.poll_error,
            snap.usage,
            snap.usage_daily,
            snap.usage_monthly,
            snap.spend_limit,
            snap.limit_remaining,
            snap.balance,
            snap.disabled,
            _usage_at(subject, bindparam("midnight")).label("usage_midnight"),
            _usage_at(subject, bindparam("week_ago")).label("usage_week_ago"),
            _usage_at(subject, bindparam("hours_ago")).label("usage_hours_ago"),
            _first(subject, "taken_at").label("first_taken_at"),
            _first(subject, "usage").label("first_usage"),
        )
        .join(ApiKey, ApiKey.id == subject.api_key_id)
        .join(User, User.id == ApiKey.user_id)
        .join(source, and_(source.api_key_id == subject.api_key_id, source.key_hash == SELF))
        .outerjoin(snap, snap.id == subject.snapshot_id)
        .where(subject.scope.in_(bindparam("scopes", expanding=True)))
        .order_by(subject.api_key_id, subject.key_hash != SELF, subject.name, subject.id)
    )


def _rows(
    session: Session,
    now: dt.datetime,
    hours: float,
    *,
    scopes: Collection[str],
    listed_only: bool,
    own_only: bool,
    api_key_ids: Collection[int] | None,
) -> list[Any]:
    """The subjects asked for, the filters in the WHERE (only their subqueries run)."""
    query = _base_query()
    if listed_only:
        query = query.where(LiveSubject.listed.is_(True))
    if own_only:
        query = query.where(LiveSubject.key_hash == SELF)
    if api_key_ids is not None:
        query = query.where(LiveSubject.api_key_id.in_(sorted(api_key_ids)))
    midnight = dt.datetime.combine(now.date(), dt.time(), dt.UTC)
    values = {
        "midnight": midnight,
        "week_ago": midnight - dt.timedelta(days=MEAN_DAYS),
        "hours_ago": now - dt.timedelta(hours=hours),
        "scopes": sorted(scopes),
    }
    return list(session.execute(query, values))


def _account_means(
    session: Session, api_key_ids: Iterable[int], today: dt.date
) -> dict[int, Decimal]:
    """Mean daily spend of the last 7 complete days from the stored history, per management
    key that has any row in them (exact: :func:`worker.reports.report.sum_money`)."""
    ids = sorted(set(api_key_ids))
    if not ids:
        return {}
    dialect = session.get_bind().dialect
    rows = session.execute(
        select(UsageStats.api_key_id, sum_money(UsageStats.cost, dialect))
        .where(
            UsageStats.api_key_id.in_(ids),
            UsageStats.date >= today - dt.timedelta(days=MEAN_DAYS),
            UsageStats.date < today,
        )
        .group_by(UsageStats.api_key_id)
    )
    return {key_id: to_money(total / MEAN_DAYS) or Decimal(0) for key_id, total in rows}


def _snapshot_mean(row: Any, midnight: dt.datetime) -> Decimal | None:
    """(usage at midnight − usage 7 days before) ÷ 7, or over the shorter history there is."""
    now_usage = row.usage_midnight
    if now_usage is None:
        return None
    if row.usage_week_ago is not None:
        return to_money((now_usage - row.usage_week_ago) / MEAN_DAYS)
    first, usage = row.first_taken_at, row.first_usage
    if first is None or usage is None:
        return None
    days = Decimal((midnight - first).total_seconds()) / 86_400
    if days < 1:
        return None
    return to_money((now_usage - usage) / days)


def _subject_id(scope: str, api_key_id: int, key_hash: str) -> str:
    if scope == "account":
        return f"account:{api_key_id}"
    return f"key:{api_key_id}:{key_hash}" if key_hash else f"key:{api_key_id}"


def _month_left(now: dt.datetime) -> Decimal:
    """Days left in the month from ``now``, today's remainder included."""
    first = now.date().replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    end = dt.datetime.combine(following, dt.time(), dt.UTC)
    return Decimal((end - now).total_seconds()) / 86_400


def _ratio(
    numerator: Decimal | None, denominator: Decimal | None, quantum: Decimal
) -> Decimal | None:
    if numerator is None or not denominator:
        return None
    return (numerator / denominator).quantize(quantum)


def figures(
    session: Session,
    *,
    now: dt.datetime | None = None,
    burn_rate_hours: float = 3.0,
    scopes: Collection[str] = ("account", "key"),
    listed_only: bool = True,
    own_only: bool = False,
    api_key_ids: Collection[int] | None = None,
) -> list[Figures]:
    """The figures of the subjects asked for, ordered by registered key, the account first:
    accounts and keys by default (``alias`` adds the registered ordinary keys an account
    lists); ``listed_only``: not the keys an account no longer lists; ``own_only``: only each
    registered key's own subject; ``api_key_ids``: only these registered keys' subjects."""
    now = now or utc_now()
    midnight = dt.datetime.combine(now.date(), dt.time(), dt.UTC)
    rows = _rows(
        session,
        now,
        burn_rate_hours,
        scopes=scopes,
        listed_only=listed_only,
        own_only=own_only,
        api_key_ids=api_key_ids,
    )
    means = _account_means(
        session, (r.api_key_id for r in rows if r.scope == "account"), now.date()
    )
    names = {r.api_key_id: r.registered for r in rows if r.scope == "account"}
    day_gone = max(Decimal((now - midnight).total_seconds()) / 86_400, Decimal(1) / 24)
    found = []
    for r in rows:
        as_of = r.polled_at
        today = r.usage_daily if as_of is not None and as_of.date() == now.date() else None
        same_month = as_of is not None and (as_of.year, as_of.month) == (now.year, now.month)
        month = r.usage_monthly if same_month else None
        mean = means.get(r.api_key_id) if r.scope == "account" else None
        if mean is None:
            mean = _snapshot_mean(r, midnight)
        burn = None
        since = now - dt.timedelta(hours=burn_rate_hours)
        if r.usage is not None and as_of is not None and as_of > since:
            base, start = r.usage_hours_ago, since
            if base is None and r.first_taken_at is not None:
                base, start = r.first_usage, max(r.first_taken_at, since)
            elapsed = Decimal((as_of - start).total_seconds()) / 3600
            if base is not None and elapsed > 0:
                burn = to_money((r.usage - base) / elapsed)
        used = None
        if r.spend_limit:
            used = _ratio((r.spend_limit - (r.limit_remaining or 0)) * HUNDRED, r.spend_limit, CENT)
        left = r.balance if r.scope == "account" else r.limit_remaining
        found.append(
            Figures(
                subject=_subject_id(r.scope, r.api_key_id, r.key_hash),
                scope=r.scope,
                api_key_id=r.api_key_id,
                key_hash=r.key_hash,
                name=r.name,
                account=names.get(r.api_key_id),
                user=r.email,
                listed=r.listed,
                disabled=r.disabled,
                as_of=as_of,
                poll_error=r.poll_error,
                today=today,
                month=month,
                usage=r.usage,
                limit=r.spend_limit,
                limit_remaining=r.limit_remaining,
                limit_used_percent=used,
                balance=r.balance,
                mean_daily=mean,
                burn_rate_per_hour=burn,
                runway_days=_ratio(left, mean, TENTH) if left is not None else None,
                month_end_projection=(
                    to_money(month + mean * _month_left(now))
                    if month is not None and mean is not None
                    else None
                ),
                spike_percent=(
                    _ratio(today * HUNDRED, mean * day_gone, CENT)
                    if today is not None and mean
                    else None
                ),
            )
        )
    return found


EVERY_SCOPE = ("account", "key", "alias")


def own_figures(found: Iterable[Figures]) -> dict[int, Figures]:
    """Among ``found``, the figures of each registered key itself, by ``api_keys.id`` (a
    caller that needs the catalogued keys too reads :func:`figures` once and splits it)."""
    return {f.api_key_id: f for f in found if f.key_hash == SELF}


def registered(
    session: Session, *, now: dt.datetime | None = None, api_key_ids: Collection[int] | None = None
) -> dict[int, Figures]:
    """The figures of each registered key itself (or of ``api_key_ids``), by ``api_keys.id``:
    an account's totals and balance, or an ordinary key's spend and limit (``status`` shows
    them)."""
    found = figures(
        session,
        now=now,
        scopes=EVERY_SCOPE,
        listed_only=False,
        own_only=True,
        api_key_ids=api_key_ids,
    )
    return {f.api_key_id: f for f in found}


def spend_between(
    session: Session, api_key_id: int, start: dt.datetime, end: dt.datetime
) -> list[tuple[str, Decimal]]:
    """What each key of an account spent between two instants (from its usage in the
    snapshots), most first; keys that spent nothing are left out."""
    rows = session.execute(
        select(
            LiveSubject.name,
            _usage_at(LiveSubject, start).label("before"),
            _usage_at(LiveSubject, end).label("after"),
        ).where(LiveSubject.api_key_id == api_key_id, LiveSubject.key_hash != SELF)
    )
    spent = [
        (name, after - (before or Decimal(0)))
        for name, before, after in rows
        if after is not None and after - (before or Decimal(0)) > 0
    ]
    return sorted(spent, key=lambda item: (-item[1], item[0]))
