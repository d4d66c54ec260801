"""Reports: spend grouped by day, model, account, key or user, and their JSON document.

The grouping happens in the database: one ``GROUP BY`` query over the ``v_usage_daily`` view
(migration 0007), whose ``level`` column says whether a row is an account's (a registered
management key's ``/activity``) or one key's of that account. A report reads one level only,
so an account's spend is never added to its keys' spend:

- ``--by day | model | account | user``: the account rows (a filter on a registered ordinary
  key reads that key's rows instead);
- ``--by key``: each OpenRouter key of each account, plus one ``(unattributed)`` row per
  account holding the account total minus its keys (deleted keys, keys not fetched), so the
  total is the accounts' total again.

Money is summed exactly on both databases by :func:`sum_money` and returned as ``Decimal``.
The JSON document (:func:`report_dict`) and the CSV columns are a documented, stable
interface; the formats live in :mod:`worker.reports.formats`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Dialect,
    Float,
    Integer,
    Select,
    String,
    TypeDecorator,
    cast,
    column,
    func,
    literal_column,
    select,
    table,
    type_coerce,
)
from sqlalchemy.orm import Session

from worker.core import render
from worker.core.days import DateRange
from worker.core.errors import NotFoundError, UsageError
from worker.reports.choices import DIMENSIONS
from worker.store.models import MONEY, MONEY_SCALE, AccountKey, ApiKey, User, to_money

ZERO = Decimal(0).quantize(Decimal(1).scaleb(-MONEY_SCALE))
UNATTRIBUTED = "(unattributed)"

# The group columns each dimension contributes to a row, in output order.
GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "day": ("date",),
    "model": ("model",),
    "account": ("account_id", "account_name", "user_email"),
    "key": ("account_id", "account_name", "key_hash", "key_name"),
    "user": ("user_email",),
    # Not a --by choice: the dashboard's chart of a period, one query (see by_day_and_model).
    "day_model": ("date", "model"),
}
METRIC_FIELDS = (
    "requests",
    "tokens_input",
    "tokens_output",
    "tokens_reasoning",
    "cost",
    "byok_cost",
)

# The view every report reads (its definition belongs to the migrations).
USAGE = table(
    "v_usage_daily",
    column("level", String()),
    column("user_email", String()),
    column("key_id", Integer()),
    column("key_name", String()),
    column("account_id", Integer()),
    column("account_name", String()),
    column("key_hash", String()),
    column("date", Date()),
    column("model", String()),
    column("requests", BigInteger()),
    column("tokens_input", BigInteger()),
    column("tokens_output", BigInteger()),
    column("tokens_reasoning", BigInteger()),
    column("cost", MONEY),
    column("byok_cost", MONEY),
)


# --- exact money sums -----------------------------------------------------------------------


class _NanoDollars(TypeDecorator[Decimal]):
    """An integer count of nano-dollars read back as a Decimal amount of dollars."""

    impl = BigInteger
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return to_money(Decimal(int(value)).scaleb(-MONEY_SCALE))


def sum_money(column: Any, dialect: Dialect) -> ColumnElement[Decimal]:
    """``SUM(column)`` of a money column, exact on both databases, read back as a Decimal.

    SQLite stores NUMERIC as a binary float, so a plain ``SUM(cost)`` there adds floats and
    drifts; summing whole nano-dollars adds integers, which is exact (up to ~9.2 billion
    dollars). PostgreSQL's ``SUM(numeric)`` is exact already. An empty group sums to 0.
    """
    if dialect.name == "sqlite":
        nanos = func.round(type_coerce(column, Float()) * literal_column(str(10**MONEY_SCALE)))
        total = func.coalesce(func.sum(cast(nanos, Integer)), 0)
        return type_coerce(total, _NanoDollars())
    return type_coerce(func.coalesce(func.sum(column), 0), MONEY)


def _sum_int(column: Any) -> ColumnElement[int]:
    return type_coerce(func.coalesce(func.sum(column), 0), BigInteger())


# --- the range and the filters --------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Optional restrictions: one user (by email), one registered key (by id), one model.

    A management key (an account) restricts to its account; a registered ordinary key that
    its account lists restricts to that key's own rows.
    """

    user_email: str | None = None
    key_id: int | None = None
    model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user_email, "key": self.key_id, "model": self.model}

    def describe(self) -> str:
        parts = [
            f"user {self.user_email}" if self.user_email else "",
            f"key {self.key_id}" if self.key_id is not None else "",
            f"model {self.model}" if self.model else "",
        ]
        return ", ".join(p for p in parts if p)


def check_filters(session: Session, filters: Filters) -> None:
    """Refuse a filter that names no existing user or key (a typo would look like no spend)."""
    user_id = None
    if filters.user_email is not None:
        user_id = session.scalar(select(User.id).where(User.email == filters.user_email))
        if user_id is None:
            raise NotFoundError(
                f"no user with email {filters.user_email}: see `openrouter-watcher users list`"
            )
    if filters.key_id is not None:
        owner = session.scalar(select(ApiKey.user_id).where(ApiKey.id == filters.key_id))
        if owner is None:
            raise NotFoundError(
                f"no API key with id {filters.key_id}: see `openrouter-watcher keys list`"
            )
        if user_id is not None and owner != user_id:
            raise UsageError(
                f"API key {filters.key_id} does not belong to "
                f"{filters.user_email}: drop --user or --key"
            )


def _listed(session: Session, key_id: int) -> bool:
    """Whether a registered key is one an account lists: its rows are key-level rows."""
    linked = select(AccountKey.id).where(AccountKey.registered_key_id == key_id).limit(1)
    return session.scalar(linked) is not None


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """Summed usage of one group (or of everything)."""

    requests: int = 0
    tokens_input: int = 0
    tokens_output: int = 0
    tokens_reasoning: int = 0
    cost: Decimal = ZERO
    byok_cost: Decimal = ZERO

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, f) + getattr(other, f) for f in METRIC_FIELDS))

    def __sub__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, f) - getattr(other, f) for f in METRIC_FIELDS))

    @property
    def zero(self) -> bool:
        return self == Totals()


@dataclass(frozen=True)
class Row:
    """One group: its identifying fields (see GROUP_FIELDS) and its totals."""

    group: dict[str, Any]
    totals: Totals


@dataclass(frozen=True)
class Report:
    by: str
    range: DateRange
    filters: Filters
    rows: list[Row] = field(default_factory=list)
    total: Totals = field(default_factory=Totals)
    usage_rows: int = 0  # usage rows matched: 0 means "no usage in the range"

    @property
    def empty(self) -> bool:
        return self.usage_rows == 0


def build_report(
    session: Session, by: str, date_range: DateRange, filters: Filters | None = None
) -> Report:
    """Query the database and return the report: one GROUP BY per level read, sorted.

    Days come in ascending order, every day of the range (a day without usage is a zero row,
    so gaps are visible); keys grouped by account; anything else by cost descending, ties by
    name. Raises NotFoundError for a filter naming an unknown user or key.
    """
    if by not in DIMENSIONS:
        raise UsageError(f"unknown --by {by!r}: choose one of {', '.join(DIMENSIONS)}")
    filters = filters or Filters()
    check_filters(session, filters)
    one_key = filters.key_id is not None and _listed(session, filters.key_id)
    dialect = session.get_bind().dialect
    if by != "key":
        level = "key" if one_key else "account"
        rows, usage_rows = _grouped(session, dialect, by, level, date_range, filters, one_key)
        if by == "day" and usage_rows:
            rows = _every_day(rows, date_range)
    else:
        rows, usage_rows = _grouped(session, dialect, "key", "key", date_range, filters, one_key)
        if not one_key:
            accounts, account_rows = _grouped(
                session, dialect, "account", "account", date_range, filters, False
            )
            rows = _with_unattributed(rows, accounts)
            usage_rows += account_rows
    total = sum((row.totals for row in rows), Totals())
    return Report(by, date_range, filters, rows, total, usage_rows)


def _grouped(
    session: Session,
    dialect: Dialect,
    by: str,
    level: str,
    date_range: DateRange,
    filters: Filters,
    one_key: bool,
) -> tuple[list[Row], int]:
    """One GROUP BY over ``level``'s rows: the groups, and how many usage rows they hold.

    ``one_key``: the key filter names a listed key (its own rows), not an account.
    """
    u = USAGE.c
    cost = sum_money(u.cost, dialect).label("cost")
    keys = [getattr(u, name) for name in GROUP_FIELDS[by]]
    # Days in calendar order; anything else biggest spender first, ties by name (then id).
    order: dict[str, list[Any]] = {
        "day": [u.date],
        "model": [cost.desc(), u.model],
        "account": [cost.desc(), u.account_name, u.account_id],
        "key": [u.account_name, u.account_id, cost.desc(), u.key_name, u.key_hash],
        "user": [cost.desc(), u.user_email],
        "day_model": [u.date, cost.desc(), u.model],
    }
    query: Select[Any] = (
        select(
            *keys,
            _sum_int(u.requests).label("requests"),
            _sum_int(u.tokens_input).label("tokens_input"),
            _sum_int(u.tokens_output).label("tokens_output"),
            _sum_int(u.tokens_reasoning).label("tokens_reasoning"),
            cost,
            sum_money(u.byok_cost, dialect).label("byok_cost"),
            func.count().label("usage_rows"),
        )
        .where(u.level == level, u.date >= date_range.since, u.date <= date_range.until)
        .group_by(*keys)
        .order_by(*order[by])
    )
    if filters.user_email is not None:
        query = query.where(u.user_email == filters.user_email)
    if filters.key_id is not None:
        query = query.where((u.key_id if one_key else u.account_id) == filters.key_id)
    if filters.model is not None:
        query = query.where(u.model == filters.model)
    rows: list[Row] = []
    usage_rows = 0
    for record in session.execute(query).mappings():
        # PostgreSQL's SUM(bigint) is numeric: back to int here.
        totals = Totals(
            int(record["requests"]),
            int(record["tokens_input"]),
            int(record["tokens_output"]),
            int(record["tokens_reasoning"]),
            record["cost"],
            record["byok_cost"],
        )
        rows.append(Row({name: record[name] for name in GROUP_FIELDS[by]}, totals))
        usage_rows += int(record["usage_rows"])
    return rows, usage_rows


def by_day_and_model(
    session: Session, date_range: DateRange, filters: Filters | None = None
) -> list[Row]:
    """One ``GROUP BY date, model`` over the range (the level ``--by model`` reads): a row per
    day and model that has usage, days in order, each day's models biggest first. What a chart
    of the period needs (its days, its models, each model's days) in one query."""
    filters = filters or Filters()
    check_filters(session, filters)
    one_key = filters.key_id is not None and _listed(session, filters.key_id)
    dialect = session.get_bind().dialect
    level = "key" if one_key else "account"
    rows, _ = _grouped(session, dialect, "day_model", level, date_range, filters, one_key)
    return [Row({**row.group, "date": _as_date(row.group["date"])}, row.totals) for row in rows]


def _with_unattributed(keys: list[Row], accounts: list[Row]) -> list[Row]:
    """Each account's keys, then its ``(unattributed)`` row: the account total minus them."""
    by_account: dict[int, list[Row]] = {}
    for row in keys:
        by_account.setdefault(row.group["account_id"], []).append(row)
    names = {row.group["account_id"]: row.group["account_name"] for row in keys + accounts}
    account_totals = {row.group["account_id"]: row.totals for row in accounts}
    out: list[Row] = []
    for account_id in sorted(names, key=lambda a: (names[a], a)):
        own = by_account.get(account_id, [])
        attributed = sum((row.totals for row in own), Totals())
        rest = account_totals.get(account_id, Totals()) - attributed
        group = {
            "account_id": account_id,
            "account_name": names[account_id],
            "key_hash": None,
            "key_name": UNATTRIBUTED,
        }
        out += [*own, Row(group, rest)]
    return out


def _every_day(rows: list[Row], date_range: DateRange) -> list[Row]:
    by_day = {_as_date(row.group["date"]): row for row in rows}
    out = []
    for offset in range(date_range.days):
        day = date_range.since + dt.timedelta(days=offset)
        out.append(Row({"date": day}, by_day[day].totals if day in by_day else Totals()))
    return out


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def record(group: dict[str, Any], totals: Totals) -> dict[str, Any]:
    """One row of the CSV/JSON: its group fields and metrics, JSON-ready."""
    out = {name: render.jsonable(value) for name, value in group.items()}
    out.update({f: render.jsonable(getattr(totals, f)) for f in METRIC_FIELDS})
    return out


def report_dict(report: Report) -> dict[str, Any]:
    """The JSON document: a stable shape, money as exact decimal strings."""
    return {
        "range": {
            "since": report.range.since.isoformat(),
            "until": report.range.until.isoformat(),
            "days": report.range.days,
        },
        "by": report.by,
        "filters": report.filters.as_dict(),
        "rows": [record(row.group, row.totals) for row in report.rows],
        "total": record({}, report.total),
    }
