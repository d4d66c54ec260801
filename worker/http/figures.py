"""The dashboard's figures, for one token's scope, from :func:`worker.report.build_report`.

Every sum is the report's (grouped in SQL, exact Decimal); this module only picks the ranges
and the filters and arranges the rows for the charts:

- the last 30 completed UTC days, per day, stacked by model: the top 8 models of the period,
  then everything else as "other";
- this month's completed days against the previous month, day by day, cumulative;
- the top accounts, keys and models of the 30 days, the latest completed day, and the sync
  status. Top keys are OpenRouter's keys of the accounts (``report --by key``), an account's
  ``(unattributed)`` spend among them, biggest first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from worker.config import ScheduleSettings
from worker.days import WINDOW_DAYS, DateRange, month_so_far, span
from worker.http.auth import Scope
from worker.report import ZERO, Filters, Row, build_report
from worker.status import Status, collect_status

TOP_MODELS = 8
TOP_KEYS = 8
TOP_ACCOUNTS = 8
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
    schedule: ScheduleSettings,
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
    status = collect_status(
        session,
        schedule,
        now,
        sync_running=sync_running,
        user_id=scope.only_user_id,
    )
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
    )
