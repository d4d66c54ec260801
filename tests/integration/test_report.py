"""worker.reports.report on SQLite and PostgreSQL: grouped sums, filters, order, ranges,
rendering."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from worker.core.days import DateRange, resolve_range
from worker.core.errors import NotFoundError, UsageError
from worker.core.render import dollars
from worker.reports.formats import bar, format_report, write_atomically
from worker.reports.report import Filters, Report, build_report, report_dict
from worker.store.db import make_session_factory
from worker.store.models import ApiKey, UsageStats

D = dt.date.fromisoformat
RANGE = DateRange(D("2026-11-01"), D("2026-11-05"))


def _group(report: Report, row_group: dict[str, Any]) -> tuple[str, ...]:
    """The reference's group key for a report row."""
    if report.by == "day":
        return (row_group["date"].isoformat(),)
    if report.by == "account":
        return (row_group["account_name"],)
    return (row_group["model" if report.by == "model" else "user_email"],)


def _as_reference(report: Report) -> dict[tuple[str, ...], tuple[object, ...]]:
    out = {}
    for row in report.rows:
        t = row.totals
        if report.by == "day" and t.requests == 0 and t.cost == 0:
            continue  # a filled-in day without usage: the reference has no entry for it
        out[_group(report, row.group)] = (
            t.requests,
            t.tokens_input,
            t.tokens_output,
            t.tokens_reasoning,
            t.cost,
            t.byok_cost,
        )
    return out


@pytest.fixture
def filled(engine: Engine, report_data: Any) -> dict[str, int]:
    """The report rows in a database of this test's own: for tests that write."""
    return dict(report_data(engine))


@pytest.fixture
def reader(report_db: tuple[Engine, dict[str, int]]) -> sessionmaker[Session]:
    """Sessions on the report rows shared by this module (``report_db``): only to read."""
    return make_session_factory(report_db[0])


@pytest.fixture
def key_ids(report_db: tuple[Engine, dict[str, int]]) -> dict[str, int]:
    return report_db[1]


@pytest.mark.parametrize("by", ["day", "model", "account", "user"])
def test_every_dimension_matches_the_reference_sums_exactly(
    reader: sessionmaker[Session], report_data: Any, by: str
) -> None:
    with reader() as session:
        report = build_report(session, by, RANGE)
    expected = report_data.expected(by)
    assert _as_reference(report) == expected
    costs = [v[4] for v in expected.values()]
    assert report.total.cost == sum(costs, Decimal(0)) == Decimal("1235.906230065")
    assert report.total.requests == 81
    assert all(isinstance(row.totals.cost, Decimal) for row in report.rows)


@pytest.mark.parametrize(
    ("kwargs", "by"),
    [
        ({"user": "bob@example.com"}, "model"),
        ({"user": "alice@example.com"}, "day"),
        ({"key": "staging"}, "model"),
        ({"model": "openai/gpt-4o"}, "account"),
        ({"user": "alice@example.com", "model": "openai/gpt-4o"}, "user"),
        ({"key": "research", "model": "google/gemini-flash"}, "day"),
    ],
)
def test_filters_restrict_the_sums(
    reader: sessionmaker[Session],
    key_ids: dict[str, int],
    report_data: Any,
    kwargs: dict[str, str],
    by: str,
) -> None:
    filters = Filters(
        user_email=kwargs.get("user"),
        model=kwargs.get("model"),
        key_id=key_ids[kwargs["key"]] if "key" in kwargs else None,
    )
    with reader() as session:
        report = build_report(session, by, RANGE, filters)
    expected = report_data.expected(by, **kwargs)
    assert expected  # the case must select something to prove anything
    assert _as_reference(report) == expected
    assert report.total.cost == sum((v[4] for v in expected.values()), Decimal(0))


def test_days_are_ascending_and_a_day_without_usage_is_a_zero_row(
    reader: sessionmaker[Session],
) -> None:
    with reader() as session:
        report = build_report(session, "day", RANGE)
    assert [row.group["date"] for row in report.rows] == [
        D("2026-11-01"),
        D("2026-11-02"),
        D("2026-11-03"),
        D("2026-11-04"),
        D("2026-11-05"),
    ]
    gap = report.rows[3].totals
    assert (gap.requests, gap.cost) == (0, Decimal(0))


def test_range_bounds_are_inclusive(reader: sessionmaker[Session]) -> None:
    with reader() as session:
        one_day = build_report(session, "model", DateRange(D("2026-10-31"), D("2026-10-31")))
        after = build_report(session, "model", DateRange(D("2026-11-06"), D("2026-11-06")))
    assert one_day.total.cost == Decimal("9.999999999")
    assert after.total.cost == Decimal("5")


def test_other_dimensions_sort_by_cost_descending_then_name(
    session_factory: sessionmaker[Session], filled: dict[str, int]
) -> None:
    key = filled["staging"]
    with session_factory.begin() as session:  # two models that tie on cost
        for model in ("zeta/tie", "alpha/tie"):
            session.add(
                UsageStats(
                    api_key_id=key, date=D("2026-11-04"), model=model, cost=Decimal("0.200004999")
                )
            )
    with session_factory() as session:
        by_model = build_report(session, "model", RANGE)
        by_account = build_report(session, "account", RANGE)
        by_user = build_report(session, "user", RANGE)
    models = [row.group["model"] for row in by_model.rows]
    assert models == [
        "openai/gpt-4o",
        "google/gemini-flash",
        "alpha/tie",
        "anthropic/claude-3.5-sonnet",
        "zeta/tie",
        "meta/llama-3",
    ]
    assert [row.group["account_name"] for row in by_account.rows] == [
        "production",
        "research",
        "staging",
    ]
    assert [row.group["user_email"] for row in by_user.rows] == [
        "alice@example.com",
        "bob@example.com",
    ]
    costs = [row.totals.cost for row in by_model.rows]
    assert costs == sorted(costs, reverse=True)


def test_money_sums_stay_exact_where_float_addition_drifts(
    session_factory: sessionmaker[Session], filled: dict[str, int]
) -> None:
    # 30 x 123456.123456789 added as binary floats gives ...672, not ...670.
    key = filled["staging"]
    since = D("2026-01-01")
    with session_factory.begin() as session:
        for day in range(30):
            session.add(
                UsageStats(
                    api_key_id=key,
                    date=since + dt.timedelta(days=day),
                    model="big/model",
                    cost=Decimal("123456.123456789"),
                    byok_cost=Decimal("99999.999999999"),
                )
            )
    with session_factory() as session:
        report = build_report(session, "model", DateRange(since, D("2026-01-30")))
    assert report.total.cost == Decimal("3703683.703703670")
    assert report.total.byok_cost == Decimal("2999999.999999970")


def test_an_empty_range_is_an_empty_report(reader: sessionmaker[Session]) -> None:
    with reader() as session:
        report = build_report(session, "day", DateRange(D("2020-01-01"), D("2020-01-31")))
    assert report.empty and report.rows == []
    assert format_report(report, "table") == "no usage between 2020-01-01 and 2020-01-31\n"


def test_unknown_user_or_key_is_not_found(
    reader: sessionmaker[Session], key_ids: dict[str, int]
) -> None:
    with reader() as session:
        with pytest.raises(NotFoundError, match=r"no user with email nobody@example\.com"):
            build_report(session, "model", RANGE, Filters(user_email="nobody@example.com"))
        missing = (session.scalar(select(ApiKey.id).order_by(ApiKey.id.desc())) or 0) + 1
        with pytest.raises(NotFoundError, match=f"no API key with id {missing}"):
            build_report(session, "model", RANGE, Filters(key_id=missing))
        with pytest.raises(UsageError, match=r"does not belong to bob@example\.com"):
            build_report(
                session,
                "model",
                RANGE,
                Filters(user_email="bob@example.com", key_id=key_ids["production"]),
            )


# --- the range (pure) -------------------------------------------------------------------------

TODAY = D("2026-11-26")


@pytest.mark.parametrize(
    ("kwargs", "since", "until"),
    [
        ({}, "2026-10-27", "2026-11-25"),
        ({"last": 7}, "2026-11-19", "2026-11-25"),
        ({"last": 1}, "2026-11-25", "2026-11-25"),
        ({"since": D("2026-11-01")}, "2026-11-01", "2026-11-25"),
        ({"until": D("2026-10-31")}, "2026-10-02", "2026-10-31"),
        ({"until": D("2026-10-31"), "last": 2}, "2026-10-30", "2026-10-31"),
        ({"since": D("2026-01-01"), "until": D("2026-01-01")}, "2026-01-01", "2026-01-01"),
    ],
)
def test_range_defaults_to_the_last_30_completed_days(
    kwargs: dict[str, Any], since: str, until: str
) -> None:
    got = resolve_range(today=TODAY, **kwargs)
    assert got == DateRange(D(since), D(until))
    assert resolve_range(today=TODAY).days == 30


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": D("2026-11-02"), "until": D("2026-11-01")}, "inverted range"),
        ({"since": D("2026-11-26")}, "inverted range"),
        ({"since": D("2026-11-01"), "last": 3}, "cannot be combined"),
        ({"last": 0}, "between 1 and 3660"),
    ],
)
def test_bad_ranges_are_usage_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        resolve_range(today=TODAY, **kwargs)
    assert info.value.exit_code == 2


# --- rendering (pure) -------------------------------------------------------------------------


def test_dollars_round_half_up_to_the_cent_with_separators() -> None:
    assert dollars(Decimal("1234.565000000")) == "$1,234.57"
    assert dollars(Decimal("0.004999999")) == "$0.00"
    assert dollars(Decimal("0")) == "$0.00"


def test_bar_is_proportional_in_eighths_and_never_hides_spend() -> None:
    assert bar(Decimal(10), Decimal(10), width=4) == "████"
    assert bar(Decimal(5), Decimal(10), width=4) == "██"
    assert bar(Decimal("1.5625"), Decimal(10), width=4) == "▋"  # 5/8 of a cell
    assert bar(Decimal("1.25"), Decimal(10), width=4) == "▌"  # 4/8: half a cell
    assert bar(Decimal("0.000000001"), Decimal(10), width=4) == "▏"
    assert bar(Decimal(0), Decimal(10)) == ""


def test_table_states_the_range_and_shows_cents_separators_bars_and_total(
    reader: sessionmaker[Session],
) -> None:
    with reader() as session:
        text = format_report(
            build_report(session, "day", RANGE, Filters(user_email="alice@example.com")), "table"
        )
    lines = text.splitlines()
    assert lines[0] == (
        "spend by day, 2026-11-01 to 2026-11-05 (UTC, 5 days), user alice@example.com"
    )
    row = next(line for line in lines if line.startswith("2026-11-02"))
    assert "$1,234.57" in row and "7,000" in row and row.endswith("█" * 20)
    assert lines[-1].split()[:2] == ["total", "28"] and "$1,234.87" in lines[-1]


def test_csv_and_json_carry_exact_nine_decimal_money(reader: sessionmaker[Session]) -> None:
    with reader() as session:
        report = build_report(session, "account", RANGE)
    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    assert rows[-1]["account_id"] == "total"
    assert rows[-1]["cost"] == "1235.906230065"
    staging = next(r for r in rows if r["account_name"] == "staging")
    assert staging["cost"] == "0.000000500" and staging["byok_cost"] == "0.000000499"
    document = json.loads(format_report(report, "json"))
    assert document == report_dict(report)
    assert document["range"] == {"since": "2026-11-01", "until": "2026-11-05", "days": 5}
    assert document["filters"] == {"user": None, "key": None, "model": None}
    assert document["total"]["cost"] == "1235.906230065"
    assert [r["account_name"] for r in document["rows"]] == ["production", "research", "staging"]


def test_write_atomically_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.csv"
    target.write_text("old")
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]
    with pytest.raises(UsageError, match="does not exist"):
        write_atomically(tmp_path / "missing" / "x.csv", "x")
