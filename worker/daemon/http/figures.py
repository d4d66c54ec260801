"""The dashboard's figures, for one token's scope, from :func:`worker.reports.report.build_report`.

Every sum is the report's (grouped in SQL, exact Decimal); this module only picks the ranges
and the filters and arranges the rows for the charts:

- the last 30 completed UTC days, per day, stacked by model: the top 8 models of the period,
  then everything else as "other";
- this month's completed days against the previous month, day by day, cumulative;
- the top accounts, keys and models of the 30 days, the latest completed day, and the sync
  status. Top keys are OpenRouter's keys of the accounts (``report --by key``), an account's
  ``(unattributed)`` spend among them, biggest first;
- now, from the live poll (:func:`worker.reports.live.figures`): each account's spend today
  and this month, balance and runway (and each ordinary key registered on its own: its limit
  left), and the keys that spent most today;
- the last alerts about the scope's keys and accounts (:func:`worker.store.alerts.history`).

A registered ordinary key that a registered account lists is not an account here: its spend is
that account's, so today's total counts it once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from worker.config import Settings
from worker.core.days import WINDOW_DAYS, DateRange, month_so_far, span
from worker.daemon.http.auth import Scope
from worker.reports.live import Figures, figures
from worker.reports.report import ZERO, Filters, Row, build_report
from worker.reports.status import Status, collect_status
from worker.store.alerts import HistoryItem, history
from worker.store.snapshots import SELF

TOP_MODELS = 8
TOP_KEYS = 8
TOP_ACCOUNTS = 8
LAST_ALERTS = 10
ALERT_DAYS = 30  # the alerts panel looks this far back
OTHER = "other"


@dataclass(frozen=True)
class Series:
    """One model's cost per day of the chart (or ``other``: the rest)."""

    name: str
    values: list[Decimal]


@dataclass(frozen=True)
class Month:
    """A month's completed days and the cumulative cost at the end of each."""

    first: dt.date
    cumulative: list[Decimal]

    @property
    def total(self) -> Decimal:
        return self.cumulative[-1] if self.cumulative else ZERO

    def through(self, days: int) -> Decimal:
        """The cost of the first ``days`` days (all of them if the month has fewer)."""
        if days <= 0 or not self.cumulative:
            return ZERO
        return self.cumulative[min(days, len(self.cumulative)) - 1]


@dataclass(frozen=True)
class Dashboard:
    scope: Scope
    range: DateRange
    days: list[dt.date]
    series: list[Series]
    day_totals: list[Decimal]
    total: Decimal
    requests: int
    this_month: Month
    previous_month: Month
    top_accounts: list[Row]
    top_keys: list[Row]
    top_models: list[Row]
    status: Status
    accounts_now: list[Figures]  # each active account (or ordinary key on its own), live
    keys_today: list[Figures]  # the keys of those accounts that spent most today
    alerts: list[HistoryItem]  # the last ones, newest first

    @property
    def today(self) -> Decimal | None:
        """Today's spend so far over :attr:`accounts_now` (None: none polled today)."""
        known = [f.today for f in self.accounts_now if f.today is not None]
        return sum(known, ZERO) if known else None

    @property
    def latest_day(self) -> tuple[dt.date, Decimal]:
        """The latest completed UTC day and its cost."""
        return self.days[-1], self.day_totals[-1]


def _per_day(session: Session, days: DateRange, filters: Filters) -> list[Decimal]:
    report = build_report(session, "day", days, filters)
    by_day = {row.group["date"]: row.totals.cost for row in report.rows}
    return [by_day.get(day, ZERO) for day in span(days.since, days.until)]


def _cumulative(values: list[Decimal]) -> list[Decimal]:
    out, running = [], ZERO
    for value in values:
        running += value
        out.append(running)
    return out


def collect(
    session: Session,
    scope: Scope,
    *,
    now: dt.datetime,
    settings: Settings,
    sync_running: bool = False,
) -> Dashboard:
    """Everything the dashboard shows for ``scope`` at ``now`` (UTC)."""
    today = now.astimezone(dt.UTC).date()
    until = today - dt.timedelta(days=1)
    period = DateRange(until - dt.timedelta(days=WINDOW_DAYS - 1), until)
    mine = Filters(user_email=None if scope.admin else scope.email)

    by_model = build_report(session, "model", period, mine)
    day_totals = _per_day(session, period, mine)
    series = [
        Series(
            row.group["model"],
            _per_day(
                session, period, Filters(user_email=mine.user_email, model=row.group["model"])
            ),
        )
        for row in by_model.rows[:TOP_MODELS]
    ]
    if len(by_model.rows) > TOP_MODELS:
        rest = [
            total - sum((s.values[i] for s in series), ZERO) for i, total in enumerate(day_totals)
        ]
        series.append(Series(OTHER, rest))

    this = month_so_far(today)
    first = today.replace(day=1)
    previous_last = first - dt.timedelta(days=1)
    previous = DateRange(previous_last.replace(day=1), previous_last)
    this_month = Month(first, _cumulative(_per_day(session, this, mine)) if this else [])
    previous_month = Month(previous.since, _cumulative(_per_day(session, previous, mine)))

    by_account = build_report(session, "account", period, mine)
    # --by key lists each account's keys together; here the biggest spenders of all accounts
    # come first (a stable sort: ties keep the report's order). A zero row has nothing to show.
    by_key = build_report(session, "key", period, mine)
    keys = sorted((r for r in by_key.rows if not r.totals.zero), key=lambda r: -r.totals.cost)
    # The live figures once, below, rather than in the status too.
    status = collect_status(
        session,
        settings.schedule,
        now,
        sync_running=sync_running,
        user_id=scope.only_user_id,
        live=False,
    )
    active = {k.api_key_id for k in status.keys if k.active}
    # Accounts and the keys they list; not the ordinary keys they list (scope "alias").
    found = [
        f
        for f in figures(
            session,
            now=now,
            burn_rate_hours=settings.live.burn_rate_hours,
            scopes=("account", "key"),
        )
        if f.api_key_id in active
    ]
    spent_today = [f for f in found if f.key_hash != SELF and f.today]
    spent_today.sort(key=lambda f: -(f.today or ZERO))
    alerts = history(session, now - dt.timedelta(days=ALERT_DAYS), user_id=scope.only_user_id)[
        -LAST_ALERTS:
    ]
    return Dashboard(
        scope=scope,
        range=period,
        days=span(period.since, period.until),
        series=series,
        day_totals=day_totals,
        total=by_model.total.cost,
        requests=by_model.total.requests,
        this_month=this_month,
        previous_month=previous_month,
        top_accounts=by_account.rows[:TOP_ACCOUNTS],
        top_keys=keys[:TOP_KEYS],
        top_models=by_model.rows[:TOP_MODELS],
        status=status,
        accounts_now=[f for f in found if f.key_hash == SELF],
        keys_today=spent_today[:TOP_KEYS],
        alerts=alerts[::-1],
    )
