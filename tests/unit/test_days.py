"""worker.core.days: OpenRouter's window, the days a backfill asks for, the one date parser and
the report range."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.core.days import (
    MAX_RANGE_DAYS,
    DateRange,
    backfill_days,
    check_days,
    parse_day,
    resolve_range,
    split_days,
    window_days,
)
from worker.core.errors import UsageError

TODAY = dt.date(2026, 3, 1)
YESTERDAY = dt.date(2026, 2, 28)


def test_the_window_is_the_30_completed_days_before_today() -> None:
    days = window_days(TODAY)
    assert (len(days), days[0], days[-1]) == (30, dt.date(2026, 1, 30), YESTERDAY)


def test_backfill_days_counts_back_from_yesterday() -> None:
    assert backfill_days(TODAY, days=3) == [dt.date(2026, 2, 26), dt.date(2026, 2, 27), YESTERDAY]
    assert len(backfill_days(TODAY, days=30)) == 30


def test_backfill_since_defaults_until_to_yesterday() -> None:
    assert backfill_days(TODAY, since=dt.date(2026, 2, 27)) == [dt.date(2026, 2, 27), YESTERDAY]
    assert backfill_days(TODAY, since=dt.date(2026, 2, 1), until=dt.date(2026, 2, 2)) == [
        dt.date(2026, 2, 1),
        dt.date(2026, 2, 2),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": 0}, "between 1 and 365"),
        ({"days": 366}, "between 1 and 365"),
        ({}, "either --days"),
        ({"days": 2, "since": YESTERDAY}, "either --days"),
        ({"days": 2, "until": YESTERDAY}, "--until goes with --since"),
        ({"since": YESTERDAY, "until": dt.date(2026, 2, 1)}, "is before --since"),
        ({"since": dt.date(2025, 2, 28)}, "older than the 365 days OpenRouter reports"),
        ({"since": YESTERDAY, "until": TODAY}, "not a completed UTC day"),
        ({"since": dt.date(2026, 3, 5)}, "is before --since"),
    ],
)
def test_backfill_days_refuses_what_openrouter_cannot_answer(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        backfill_days(TODAY, **kwargs)
    assert info.value.exit_code == 2


def test_check_days_sorts_and_deduplicates_and_refuses_nothing() -> None:
    assert check_days([YESTERDAY, dt.date(2026, 2, 1), YESTERDAY], TODAY) == [
        dt.date(2026, 2, 1),
        YESTERDAY,
    ]
    with pytest.raises(UsageError, match="no days"):
        check_days([], TODAY)
    with pytest.raises(UsageError, match="not a completed UTC day"):
        check_days([TODAY + dt.timedelta(days=3)], TODAY)


@pytest.mark.parametrize("text", ["2026-02-28", " 2026-02-28 "])
def test_parse_day_takes_only_yyyy_mm_dd(text: str) -> None:
    assert parse_day(text) == YESTERDAY


@pytest.mark.parametrize(
    "text", ["2026-W09-6", "20260228", "2026-02-30", "28/02/2026", "yesterday", "", "2026-2-28"]
)
def test_parse_day_refuses_every_other_spelling(text: str) -> None:
    with pytest.raises(UsageError, match=f"bad date {text!r}: use YYYY-MM-DD") as info:
        parse_day(text)
    assert info.value.exit_code == 2


def test_backfill_of_a_day_far_in_the_past_is_refused_without_expanding_the_range() -> None:
    with pytest.raises(UsageError, match="older than the 365 days OpenRouter reports"):
        backfill_days(TODAY, since=dt.date(1, 1, 1))


def test_the_default_range_is_the_last_30_completed_days() -> None:
    assert resolve_range(today=TODAY) == DateRange(dt.date(2026, 1, 30), YESTERDAY)
    assert resolve_range(today=TODAY, last=1) == DateRange(YESTERDAY, YESTERDAY)
    assert resolve_range(today=TODAY, since=dt.date(2026, 2, 1)).days == 28


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"last": 3, "since": YESTERDAY}, "cannot be combined"),
        ({"since": TODAY, "until": YESTERDAY}, "inverted range"),
        ({"last": 0}, f"between 1 and {MAX_RANGE_DAYS}"),
        ({"last": 3_650_000}, f"between 1 and {MAX_RANGE_DAYS}"),
        ({"until": dt.date(1, 1, 1)}, "leaves no room"),
        ({"since": dt.date(1, 1, 1), "until": dt.date(9999, 12, 31)}, "longer than 3660 days"),
    ],
)
def test_ranges_a_report_cannot_answer_are_usage_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        resolve_range(today=TODAY, **kwargs)
    assert info.value.exit_code == 2


def test_a_backfill_reaches_a_year_back_split_between_activity_and_analytics() -> None:
    days = backfill_days(TODAY, since=dt.date(2025, 3, 1), until=dt.date(2026, 2, 1))
    assert (days[0], days[-1], len(days)) == (dt.date(2025, 3, 1), dt.date(2026, 2, 1), 338)
    recent, older = split_days(days, TODAY)
    assert (recent[0], recent[-1]) == (dt.date(2026, 1, 30), dt.date(2026, 2, 1))
    assert (older[0], older[-1]) == (dt.date(2025, 3, 1), dt.date(2026, 1, 29))
