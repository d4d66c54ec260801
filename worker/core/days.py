"""UTC days: the clock, OpenRouter's window, the days a command asks for, the one date parser.

OpenRouter's days are UTC days, and ``/activity`` reports the last 30 *completed* ones: on
2026-11-28 that is 2026-10-29 … 2026-11-27. Every command that takes a date parses it with
:func:`parse_day` (``YYYY-MM-DD`` and nothing else), and every range is checked here, before a
database or the network is touched.

Testing hook: when ``OPENROUTER_WATCHER_TESTING_CLOCK`` holds an ISO-8601 instant (e.g.
``2026-11-27T23:59:58Z``), :func:`utc_now` starts there the first time the process reads the
clock, and runs forward in real time. Subprocess tests use it so that nothing depends on the
real date (no flake at midnight UTC) and so that a run can cross midnight on purpose. From the
first reading, not from the start: a process slow to import on a loaded machine must not let
the time run past what a test set. It is not a setting: production never sets it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from worker.core.errors import UsageError

WINDOW_DAYS = 30  # OpenRouter's /activity reports the last 30 completed UTC days
HISTORY_DAYS = 365  # /analytics/query reports up to this many days back
MAX_RANGE_DAYS = 3660  # the longest range a report accepts: ten years and some leap days
CLOCK_ENV = "OPENROUTER_WATCHER_TESTING_CLOCK"

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _pinned_clock() -> tuple[dt.datetime, float] | None:
    raw = os.environ.get(CLOCK_ENV, "").strip()
    if not raw:
        return None
    start = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    return start.astimezone(dt.UTC), time.monotonic()


_PINNED: tuple[dt.datetime, float] | None = None
_ENV_READ = False  # the environment's pinned clock is read at the first utc_now()


def pin_clock(instant: dt.datetime | None) -> None:
    """The testing hook, in process: :func:`utc_now` runs from ``instant`` from now on, as if
    the process had started with ``OPENROUTER_WATCHER_TESTING_CLOCK`` (None: the real clock)."""
    global _PINNED, _ENV_READ
    _ENV_READ = True
    _PINNED = None if instant is None else (instant.astimezone(dt.UTC), time.monotonic())


def utc_now() -> dt.datetime:
    """The current time, timezone-aware, in UTC (see the testing hook above)."""
    global _PINNED, _ENV_READ
    if not _ENV_READ:
        _PINNED = _pinned_clock()
        _ENV_READ = True
    if _PINNED is None:
        return dt.datetime.now(dt.UTC)
    start, at = _PINNED
    return start + dt.timedelta(seconds=time.monotonic() - at)


def utc_today() -> dt.date:
    """Today's UTC date: OpenRouter's days are UTC days."""
    return utc_now().date()


def completed_window(today: dt.date) -> tuple[dt.date, dt.date]:
    """The last 30 completed UTC days before ``today``, as an inclusive (first, last) pair."""
    return today - dt.timedelta(days=WINDOW_DAYS), today - dt.timedelta(days=1)


def month_so_far(today: dt.date) -> DateRange | None:
    """The completed UTC days of ``today``'s month, or None on the 1st (there are none yet)."""
    first = today.replace(day=1)
    if today == first:
        return None
    return DateRange(first, today - dt.timedelta(days=1))


def span(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included, oldest first."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def window_days(today: dt.date) -> list[dt.date]:
    """Every day of OpenRouter's window (the last 30 completed UTC days), oldest first."""
    return span(*completed_window(today))


def parse_day(text: str) -> dt.date:
    """A ``YYYY-MM-DD`` calendar date, strictly; :class:`UsageError` naming the text otherwise.

    ``date.fromisoformat`` alone also takes ``2026-W44-1`` and ``20261101``: one spelling, the
    one every output prints, is easier to get right in scripts.
    """
    value = text.strip()
    if _DAY_RE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise UsageError(f"bad date {text!r}: use YYYY-MM-DD, e.g. 2026-11-01")


def check_days(days: Iterable[dt.date], today: dt.date) -> list[dt.date]:
    """The days sorted and deduplicated; a :class:`UsageError` for a day OpenRouter cannot
    report: not completed yet, or older than :data:`HISTORY_DAYS` (``/activity`` reports the
    last 30 days, ``/analytics/query`` the year before)."""
    last = completed_window(today)[1]
    oldest = today - dt.timedelta(days=HISTORY_DAYS)
    result = sorted(set(days))
    if not result:
        raise UsageError("no days to fetch")
    for day in result:
        if day >= today:
            raise UsageError(
                f"{day} is not a completed UTC day yet (today is {today}): "
                f"OpenRouter reports days up to {last}"
            )
        if day < oldest:
            raise UsageError(
                f"{day} is older than the {HISTORY_DAYS} days OpenRouter reports "
                f"({oldest} … {last}): it can no longer be fetched"
            )
    return result


def split_days(days: Iterable[dt.date], today: dt.date) -> tuple[list[dt.date], list[dt.date]]:
    """(days in /activity's window, older days for /analytics/query), each sorted."""
    first = completed_window(today)[0]
    ordered = sorted(days)
    return [d for d in ordered if d >= first], [d for d in ordered if d < first]


def backfill_days(
    today: dt.date,
    *,
    days: int | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> list[dt.date]:
    """The days a backfill asks for: the last ``days`` completed days, or ``since``…``until``.

    ``until`` defaults to yesterday. Raises :class:`UsageError` for a count outside 1…365, an
    inverted range or a day OpenRouter cannot report (see :func:`check_days`).
    """
    last = completed_window(today)[1]
    if (days is None) == (since is None):
        raise UsageError("give either --days N or --since YYYY-MM-DD")
    if days is not None:
        if until is not None:
            raise UsageError("--until goes with --since, not with --days")
        if not 1 <= days <= HISTORY_DAYS:
            raise UsageError(
                f"--days must be between 1 and {HISTORY_DAYS} (OpenRouter reports the last "
                f"{HISTORY_DAYS} completed days), got {days}"
            )
        return [today - dt.timedelta(days=n) for n in range(days, 0, -1)]
    assert since is not None
    until = until if until is not None else last
    if until < since:
        raise UsageError(f"--until {until} is before --since {since}")
    if since < today - dt.timedelta(days=HISTORY_DAYS) or until > last:
        # Refused before the range is expanded day by day (since could be year 1).
        return check_days([since, until], today)
    return check_days(span(since, until), today)


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of UTC days."""

    since: dt.date
    until: dt.date

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    def __str__(self) -> str:
        return f"{self.since.isoformat()} and {self.until.isoformat()}"


def resolve_range(
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    last: int | None = None,
    today: dt.date,
    default_days: int = WINDOW_DAYS,
) -> DateRange:
    """The range a user asked for; by default the last ``default_days`` completed UTC days.

    ``until`` defaults to yesterday (OpenRouter only reports completed days); ``since``
    defaults to ``until - (last or default_days) + 1``. ``last`` cannot be combined with
    ``since``. A range longer than :data:`MAX_RANGE_DAYS`, or one reaching outside the
    calendar, is a :class:`UsageError`.
    """
    if last is not None and since is not None:
        raise UsageError("--last and --since cannot be combined: give one of them")
    count = last if last is not None else default_days
    if not 1 <= count <= MAX_RANGE_DAYS:
        raise UsageError(f"--last must be between 1 and {MAX_RANGE_DAYS} days, not {count}")
    end = until if until is not None else today - dt.timedelta(days=1)
    if since is None:
        if (end - dt.date.min).days < count - 1:
            raise UsageError(f"--until {end.isoformat()} leaves no room for {count} days before it")
        since = end - dt.timedelta(days=count - 1)
    if since > end:
        raise UsageError(
            f"inverted range: --since {since.isoformat()} is after --until "
            f"{end.isoformat()}: swap them"
        )
    if (end - since).days + 1 > MAX_RANGE_DAYS:
        raise UsageError(
            f"the range {since.isoformat()} … {end.isoformat()} is longer than "
            f"{MAX_RANGE_DAYS} days: narrow it with --since / --until"
        )
    return DateRange(since, end)
