"""The dashboard's figures, for one token's scope, from :mod:`worker.reports.report`.

Every sum is the report's (grouped in SQL, exact Decimal; a model's 30 days are the exact sum of
its days); this module only picks the ranges and the filters and arranges the rows for the
charts:

- the last 30 completed UTC days, per day, stacked by model: the top 8 models of the period,
  then everything else as "other";
- this month's completed days against the previous month, day by day, cumulative;
- the top accounts, keys and models of the 30 days, the latest completed day, and the sync
  status. Top keys are OpenRouter's keys of the accounts (``report --by key``), an account's
  ``(unattributed)`` spend among them, biggest first;
- now, from the live poll (:func:`worker.reports.live.figures`): each account's spend today
  and this month, balance and runway (and each ordinary key registered on its own: its limit
  left), and the keys that spent most today;
- the last alerts about the scope's keys and accounts (:func:`worker.store.alerts.history`),
  and the last guard actions on them (:func:`worker.store.guards.history`).

Queries: one grouped (date, model) query over the 30 days (the chart, the top models, the
totals), one per-day query over the previous month and this one, one report per account and
one per key, the status, the live figures, the last ten alerts and guard actions.

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
from worker.reports.report import ZERO, Filters, Row, Totals, build_report, by_day_and_model
from worker.reports.status import Status, collect_status
from worker.store import guards
from worker.store.alerts import HistoryItem, history
from worker.store.guards import Action
from worker.store.snapshots import SELF

TOP_MODELS = 8
TOP_KEYS = 8
TOP_ACCOUNTS = 8
LAST_ALERTS = 10
LAST_GUARDS = 10
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
    guards: list[Action]  # the last guard actions on the scope's keys, newest first

    @property
    def today(self) -> Decimal | None:
        """Today's spend so far over :attr:`accounts_now` (None: none polled today)."""
        known = [f.today for f in self.accounts_now if f.today is not None]
        return sum(known, ZERO) if known else None

    @property
    def latest_day(self) -> tuple[dt.date, Decimal]:
        """The latest completed UTC day and its cost."""
        return self.days[-1], self.day_totals[-1]


def _per_day(rows: list[Row], days: DateRange) -> list[Decimal]:
    """Each day's cost from rows grouped by day (and model), every day of ``days``."""
    by_day: dict[dt.date, Decimal] = {}
    for row in rows:
        day = row.group["date"]
        if days.since <= day <= days.until:
            by_day[day] = by_day.get(day, ZERO) + row.totals.cost
    return [by_day.get(day, ZERO) for day in span(days.since, days.until)]


def _by_model(rows: list[Row]) -> list[Row]:
    """Day-and-model rows summed per model, biggest first (ties by name), like ``--by model``."""
    totals: dict[str, Totals] = {}
    for row in rows:
        model = row.group["model"]
        totals[model] = totals.get(model, Totals()) + row.totals
    ordered = sorted(totals.items(), key=lambda item: (-item[1].cost, item[0]))
    return [Row({"model": model}, total) for model, total in ordered]


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

    # The 30 days per day and model in one query: the models' totals, the days' totals and
    # each top model's days all come from it.
    daily = by_day_and_model(session, period, mine)
    models = _by_model(daily)
    whole = sum((row.totals for row in models), Totals())
    day_totals = _per_day(daily, period)
    series = [
        Series(
            row.group["model"],
            _per_day([r for r in daily if r.group["model"] == row.group["model"]], period),
        )
        for row in models[:TOP_MODELS]
    ]
    if len(models) > TOP_MODELS:
        rest = [
            total - sum((s.values[i] for s in series), ZERO) for i, total in enumerate(day_totals)
        ]
        series.append(Series(OTHER, rest))

    # This month's completed days and the whole previous month: one per-day query for both.
    this = month_so_far(today)
    first = today.replace(day=1)
    previous_last = first - dt.timedelta(days=1)
    previous = DateRange(previous_last.replace(day=1), previous_last)
    both = build_report(
        session, "day", DateRange(previous.since, this.until if this else previous_last), mine
    ).rows
    this_month = Month(first, _cumulative(_per_day(both, this)) if this else [])
    previous_month = Month(previous.since, _cumulative(_per_day(both, previous)))

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
    # The active accounts and the keys they list; not the ordinary keys they list ("alias").
    found = figures(
        session,
        now=now,
        burn_rate_hours=settings.live.burn_rate_hours,
        scopes=("account", "key"),
        api_key_ids=[k.api_key_id for k in status.keys if k.active],
    )
    spent_today = [f for f in found if f.key_hash != SELF and f.today]
    spent_today.sort(key=lambda f: -(f.today or ZERO))
    alerts = history(
        session,
        now - dt.timedelta(days=ALERT_DAYS),
        user_id=scope.only_user_id,
        last=LAST_ALERTS,
    )
    actions = guards.history(session, user_id=scope.only_user_id, last=LAST_GUARDS)
    return Dashboard(
        scope=scope,
        range=period,
        days=span(period.since, period.until),
        series=series,
        day_totals=day_totals,
        total=whole.cost,
        requests=whole.requests,
        this_month=this_month,
        previous_month=previous_month,
        top_accounts=by_account.rows[:TOP_ACCOUNTS],
        top_keys=keys[:TOP_KEYS],
        top_models=models[:TOP_MODELS],
        status=status,
        accounts_now=[f for f in found if f.key_hash == SELF],
        keys_today=spent_today[:TOP_KEYS],
        alerts=alerts[::-1],
        guards=actions[::-1],
    )
