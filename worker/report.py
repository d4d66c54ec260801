"""Reports: spend grouped by day, model, key or user, and its table / CSV / JSON renderings.

The grouping happens in the database (one ``GROUP BY`` query over ``usage_stats`` joined to
``api_keys`` and ``users``); Python only sees one row per group. Money is summed exactly on
both databases by :func:`sum_money` and returned as ``Decimal``.

Output formats (the JSON shape and CSV columns are a documented, stable interface):

- table: dollars to the cent, token counts with thousands separators, a total row; ``--by day``
  adds an inline bar proportional to each day's cost.
- CSV: RFC 4180 via :mod:`csv`, a header row, one row per group, then a row whose first column
  is ``total``; money with all 9 stored decimals.
- JSON: ``{"range": {...}, "by": ..., "filters": {...}, "rows": [...], "total": {...}}`` with
  money as exact decimal strings (9 decimals).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import tempfile
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Dialect,
    Float,
    Integer,
    TypeDecorator,
    cast,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session

from worker import render
from worker.days import DateRange
from worker.errors import NotFoundError, UsageError
from worker.models import MONEY, MONEY_SCALE, ApiKey, UsageStats, User, to_money

Dimension = Literal["day", "model", "key", "user"]
Format = Literal["table", "csv", "json"]
DIMENSIONS: tuple[str, ...] = get_args(Dimension)
FORMATS: tuple[str, ...] = get_args(Format)
ZERO = Decimal(0).quantize(Decimal(1).scaleb(-MONEY_SCALE))
BAR_WIDTH = 20  # characters for the largest day
BAR_EIGHTHS = "▏▎▍▌▋▊▉█"  # 1/8 … 8/8 of a character cell

# The group columns each dimension contributes to a row, in output order.
GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "day": ("date",),
    "model": ("model",),
    "key": ("key_id", "key_name", "user_email"),
    "user": ("user_email",),
}
METRIC_FIELDS = (
    "requests",
    "tokens_input",
    "tokens_output",
    "tokens_reasoning",
    "cost",
    "byok_cost",
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
    """Optional restrictions: one user (by email), one key (by id), one model (by slug)."""

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
    usage_rows: int = 0  # usage_stats rows matched: 0 means "no usage in the range"

    @property
    def empty(self) -> bool:
        return self.usage_rows == 0


def build_report(
    session: Session, by: str, date_range: DateRange, filters: Filters | None = None
) -> Report:
    """Query the database and return the report: one GROUP BY, sorted, plus the total.

    Days come in ascending order, every day of the range (a day without usage is a zero row,
    so gaps are visible); other dimensions by cost descending, ties by name. Raises
    NotFoundError for a filter naming an unknown user or key.
    """
    if by not in DIMENSIONS:
        raise UsageError(f"unknown --by {by!r}: choose one of {', '.join(DIMENSIONS)}")
    filters = filters or Filters()
    check_filters(session, filters)
    dialect = session.get_bind().dialect
    cost = sum_money(UsageStats.cost, dialect).label("cost")
    metrics = [
        _sum_int(UsageStats.requests_count).label("requests"),
        _sum_int(UsageStats.tokens_input).label("tokens_input"),
        _sum_int(UsageStats.tokens_output).label("tokens_output"),
        _sum_int(UsageStats.tokens_reasoning).label("tokens_reasoning"),
        cost,
        sum_money(UsageStats.byok_cost, dialect).label("byok_cost"),
        func.count().label("usage_rows"),
    ]
    groups: dict[str, list[Any]] = {
        "day": [UsageStats.date.label("date")],
        "model": [UsageStats.model.label("model")],
        "key": [
            ApiKey.id.label("key_id"),
            ApiKey.name.label("key_name"),
            User.email.label("user_email"),
        ],
        "user": [User.email.label("user_email")],
    }
    keys = groups[by]
    # Days in calendar order; anything else biggest spender first, ties by name (then id).
    order: dict[str, list[Any]] = {
        "day": [UsageStats.date],
        "model": [cost.desc(), UsageStats.model],
        "key": [cost.desc(), ApiKey.name, ApiKey.id],
        "user": [cost.desc(), User.email],
    }
    query = (
        select(*keys, *metrics)
        .select_from(UsageStats)
        .join(ApiKey, ApiKey.id == UsageStats.api_key_id)
        .join(User, User.id == ApiKey.user_id)
        .where(UsageStats.date >= date_range.since, UsageStats.date <= date_range.until)
        .group_by(*keys)
        .order_by(*order[by])
    )
    if filters.user_email is not None:
        query = query.where(User.email == filters.user_email)
    if filters.key_id is not None:
        query = query.where(ApiKey.id == filters.key_id)
    if filters.model is not None:
        query = query.where(UsageStats.model == filters.model)

    rows: list[Row] = []
    total = Totals()
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
        total += totals
        usage_rows += int(record["usage_rows"])
    if by == "day" and usage_rows:
        rows = _every_day(rows, date_range)
    return Report(by, date_range, filters, rows, total, usage_rows)


def _every_day(rows: list[Row], date_range: DateRange) -> list[Row]:
    by_day = {_as_date(row.group["date"]): row for row in rows}
    out = []
    for offset in range(date_range.days):
        day = date_range.since + dt.timedelta(days=offset)
        out.append(Row({"date": day}, by_day[day].totals if day in by_day else Totals()))
    return out


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


# --- rendering ------------------------------------------------------------------------------


def empty_message(report: Report) -> str:
    """What to print when nothing matched."""
    text = f"no usage between {report.range}"
    described = report.filters.describe()
    return f"{text} ({described})" if described else text


def header_line(report: Report) -> str:
    """States the exact range (and filters) a report covers."""
    days = report.range.days
    text = (
        f"spend by {report.by}, {report.range.since.isoformat()} to "
        f"{report.range.until.isoformat()} (UTC, {days} day{'s' if days != 1 else ''})"
    )
    described = report.filters.describe()
    return f"{text}, {described}" if described else text


def bar(value: Decimal, largest: Decimal, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of unicode blocks, ``width`` cells for ``largest``, in eighths.

    Any spend above zero shows at least one eighth, so a small day is not mistaken for none.
    """
    if largest <= 0 or value <= 0:
        return ""
    eighths = int((value / largest * width * 8).to_integral_value(rounding=ROUND_HALF_UP))
    eighths = max(eighths, 1)
    full, part = divmod(eighths, 8)
    return BAR_EIGHTHS[-1] * full + (BAR_EIGHTHS[part - 1] if part else "")


_TITLES = {
    "date": "date",
    "model": "model",
    "key_id": "key",
    "key_name": "name",
    "user_email": "user",
}
_METRIC_TITLES = ("requests", "tokens in", "tokens out", "reasoning", "cost", "BYOK cost")


def render_table(report: Report) -> str:
    """A plain-text table with a header line, one line per group and a total line."""
    group_fields = GROUP_FIELDS[report.by]
    titles = [_TITLES[f] for f in group_fields] + list(_METRIC_TITLES)
    align = [render.LEFT] * len(group_fields) + [render.RIGHT] * len(METRIC_FIELDS)
    rows = [[row.group[f] for f in group_fields] + _metrics(row.totals) for row in report.rows]
    total = ["total"] + [""] * (len(group_fields) - 1) + _metrics(report.total)
    lines = render.table(titles, rows, align=align, footer=[total])
    if report.by == "day":
        # Each day's line ends with a bar proportional to its cost (lines: titles, rule, days).
        largest = max((row.totals.cost for row in report.rows), default=ZERO)
        for index, row in enumerate(report.rows, start=2):
            drawn = bar(row.totals.cost, largest)
            lines[index] = lines[index] + "  " + drawn if drawn else lines[index]
    return "\n".join([header_line(report), "", *lines]) + "\n"


def _metrics(totals: Totals) -> list[Any]:
    return [
        f"{totals.requests:,}",
        f"{totals.tokens_input:,}",
        f"{totals.tokens_output:,}",
        f"{totals.tokens_reasoning:,}",
        totals.cost,
        totals.byok_cost,
    ]


def _record(group: dict[str, Any], totals: Totals) -> dict[str, Any]:
    record = {name: render.jsonable(value) for name, value in group.items()}
    record.update({f: render.jsonable(getattr(totals, f)) for f in METRIC_FIELDS})
    return record


def render_csv(report: Report) -> str:
    """RFC 4180 CSV: a header, one row per group, then the total (first column ``total``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    names = [*GROUP_FIELDS[report.by], *METRIC_FIELDS]
    writer.writerow(names)
    for row in report.rows:
        record = _record(row.group, row.totals)
        writer.writerow([record[n] for n in names])
    if not report.empty:
        group = {name: "" for name in GROUP_FIELDS[report.by]}
        group[GROUP_FIELDS[report.by][0]] = "total"
        record = _record(group, report.total)
        writer.writerow([record[n] for n in names])
    return buffer.getvalue()


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
        "rows": [_record(row.group, row.totals) for row in report.rows],
        "total": _record({}, report.total),
    }


def render_json(report: Report) -> str:
    return render.to_json(report_dict(report)) + "\n"


def format_report(report: Report, fmt: str) -> str:
    """The report in ``fmt`` (table, csv or json)."""
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "table":
        return empty_message(report) + "\n" if report.empty else render_table(report)
    raise UsageError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so a reader never sees half a file: temp file, then rename."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"cannot write {target}: directory {directory} does not exist")
    if target.is_dir():
        raise UsageError(f"cannot write {target}: it is a directory; name a file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
