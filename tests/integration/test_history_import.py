"""A year of history (issue 12): the days before /activity's window imported through POST
/analytics/query, the account's into usage_stats and each catalogued key's into
key_usage_stats, exact to the nano-dollar; split when truncated, resumed when cut short, paced
under OpenRouter's rate limit. The real client against the fake OpenRouter on 127.0.0.1, on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Sums, add_sums, stored_sums
from worker.config import Settings
from worker.core import days
from worker.core.days import completed_window
from worker.openrouter import OpenRouterClient
from worker.openrouter.pacing import RateLimiter
from worker.store.models import ApiKey, KeyUsageStats, UsageStats
from worker.sync.run import run_sync
from worker.sync.summary import RunSummary
from worker.testing.clock import PinnedClock, noon
from worker.testing.fake_account import FakeAccount, generate_account, replace_key
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.testing.usage import catalogue_of
from worker.vault.crypto import Keyring

TODAY = dt.date(2026, 11, 26)
HISTORY_DAYS = 60
FIRST = TODAY - dt.timedelta(days=HISTORY_DAYS)  # the oldest day imported
LAST = completed_window(TODAY)[0] - dt.timedelta(days=1)  # the day before /activity's window
YESTERDAY = TODAY - dt.timedelta(days=1)
MGMT = "sk-or-v1-mgmt-h-" + "3" * 48
ANALYTICS = "/api/v1/analytics/query"

# --- fixtures and helpers ---------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("pinned_clock")


@pytest.fixture
def pinned_day() -> dt.date:
    return TODAY


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace("sync", history_days=HISTORY_DAYS)


@pytest.fixture
def account(fake: FakeOpenRouter) -> FakeAccount:
    """Two keys with 64 days of activity on two models: 34 days before the window, of which
    the 30 within history_days are imported and the 4 older ones never are."""
    return fake.add_account(
        MGMT, generate_account(today=TODAY, keys=2, days=HISTORY_DAYS + 4, models=2, seed=21)
    )


@pytest.fixture
def mgmt(register: Callable[..., int]) -> int:
    """The account's management key, registered as `keys add` does."""
    return register(MGMT, "acme")


def _sync(
    factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    *,
    pace: RateLimiter | None = None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """One sync through a client of its own: the process-wide 64-a-minute analytics limiter
    would make every test after the 64th request of a minute wait, so each run gets a limiter
    of its own (by default one that never waits)."""
    pace = pace or RateLimiter(10_000, 60.0)
    with OpenRouterClient(settings.openrouter, analytics_pace=pace) as client:
        return run_sync(factory, settings, keyring, trigger="sync", client=client, stop=stop)


_sums = stored_sums


def _account_sums(account: FakeAccount, first: dt.date, last: dt.date) -> Sums:
    return add_sums(*(_sums(key.rows, first, last) for key in account.keys))


def _rows(
    factory: sessionmaker[Session], model: type[UsageStats] | type[KeyUsageStats], owner: int
) -> dict[tuple[dt.date, str], tuple[tuple[Any, ...], str]]:
    """An owner's stored rows: {(day, model): ((requests, in, out, reasoning, cost, byok),
    source)}."""
    column = UsageStats.api_key_id if model is UsageStats else KeyUsageStats.account_key_id
    with factory() as s:
        return {
            (r.date, r.model): (
                (
                    r.requests_count,
                    r.tokens_input,
                    r.tokens_output,
                    r.tokens_reasoning,
                    r.cost,
                    r.byok_cost,
                ),
                r.source,
            )
            for r in s.scalars(select(model).where(column == owner))
        }


def _values(rows: dict[tuple[dt.date, str], tuple[tuple[Any, ...], str]]) -> Sums:
    return {pair: values for pair, (values, _source) in rows.items()}


def _analytics_requests(fake: FakeOpenRouter, start: int = 0) -> list[int]:
    """The statuses of the analytics requests since ``start``."""
    return [r.status for r in fake.requests[start:] if r.path == ANALYTICS]


def _chunks(logs: list[dict[str, Any]]) -> dict[str, list[tuple[str, str, int]]]:
    """The stored analytics answers per subject: (first day, last day, rows), in order."""
    out: dict[str, list[tuple[str, str, int]]] = {}
    for event in logs:
        if event["event"] == "history_chunk":
            out.setdefault(event["subject"], []).append(
                (event["first_day"], event["last_day"], event["rows"])
            )
    return out


def _assert_partition(chunks: list[tuple[str, str, int]], first: dt.date, last: dt.date) -> None:
    """The chunks cover first … last exactly, newest first, no day twice."""
    spans = [(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b, _rows in chunks]
    assert spans[0][1] == last and spans[-1][0] == first
    for (older_first, _), (_, newer_last) in itertools.pairwise(spans):
        assert newer_last == older_first - dt.timedelta(days=1)


def _assert_complete(factory: sessionmaker[Session], account: FakeAccount, mgmt: int) -> None:
    """The account's and each key's rows are exactly the generated ones, FIRST … yesterday;
    days before the window come from analytics, the window's from /activity; the import of
    each is recorded as complete."""
    window_first = completed_window(TODAY)[0]
    stored = _rows(factory, UsageStats, mgmt)
    assert _values(stored) == _account_sums(account, FIRST, YESTERDAY)
    for (day, _model), (_stored, source) in stored.items():
        assert source == ("analytics" if day < window_first else "activity")
    entries = catalogue_of(factory, mgmt)
    for key in account.keys:
        rows = _rows(factory, KeyUsageStats, entries[key.hash].id)
        assert _values(rows) == _sums(key.rows, FIRST, YESTERDAY)
        assert {source for (day, _m), (_v, source) in rows.items() if day <= LAST} == {"analytics"}
    with factory() as s:
        account_key = s.get(ApiKey, mgmt)
        assert account_key is not None
        assert account_key.history_reached == FIRST
        assert account_key.history_done_at is not None
    for entry in entries.values():
        assert (entry.history_reached, entry.history_done_at is not None) == (FIRST, True)


# --- the first import ------------------------------------------------------------------------


def test_the_first_sync_imports_the_days_before_the_window_exactly_and_the_next_asks_nothing(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
) -> None:
    imported = _account_sums(account, FIRST, LAST)
    assert len(imported) == 30 * 2
    # Some spend went to the user's own provider keys: cost = total_usage - byok_usage.
    assert any(values[5] > 0 for values in imported.values())

    summary = _sync(session_factory, settings, keyring)

    assert summary.status == "ok"
    assert summary.history.as_dict() == {
        "accounts": 1,
        "keys": 2,
        "pending": 0,
        "unknown_keys": [],
        "requests": 3,  # one answer each for the account and its two keys
        "rate_limit_seconds": 0.0,
        "rows": {"inserted": 3 * 60, "updated": 0, "unchanged": 0, "deleted": 0, "kept": 0},
    }
    assert _analytics_requests(fake) == [200, 200, 200]
    assert summary.requests == 4 + 2 + 3  # listing, two keys' /activity, three analytics
    _assert_complete(session_factory, account, mgmt)
    stored = _values(_rows(session_factory, UsageStats, mgmt))
    assert {pair: stored[pair] for pair in imported} == imported
    assert min(day for day, _model in stored) == FIRST  # nothing older than history_days

    start = len(fake.requests)
    again = _sync(session_factory, settings, keyring)
    assert (again.status, again.history.requests, again.history.pending) == ("ok", 0, 0)
    assert _analytics_requests(fake, start) == []
    _assert_complete(session_factory, account, mgmt)


def test_a_truncated_answer_is_asked_again_in_halves_and_the_result_is_exact(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
) -> None:
    account.analytics_row_limit = 16  # 30 days of 2 models: 60 rows per subject

    with structlog.testing.capture_logs() as logs:
        summary = _sync(session_factory, settings, keyring)

    assert (summary.status, summary.history.pending) == ("ok", 0)
    # Per subject: 60 rows → two halves of 30 → four quarters of at most 16, stored.
    assert _analytics_requests(fake) == [200] * 3 * 7
    assert summary.history.requests == 3 * 7
    chunks = _chunks(logs)
    assert len(chunks) == 3
    for subject_chunks in chunks.values():
        assert len(subject_chunks) == 4
        assert all(rows <= 16 for _first, _last, rows in subject_chunks)
        _assert_partition(subject_chunks, FIRST, LAST)
    _assert_complete(session_factory, account, mgmt)


@pytest.mark.parametrize("cut", ["failing", "stopped"])
def test_an_import_cut_short_resumes_where_it_stopped_and_ends_exact(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    cut: str,
) -> None:
    # Two answers per subject (newest half first); the run is cut after the account's first.
    account.analytics_row_limit = 32
    stop = threading.Event()
    seen = {"analytics": 0, "failing": True}

    def on_request(path: str, _query: dict[str, str]) -> None:
        if path != "/analytics/query":
            return
        seen["analytics"] += 1
        if cut == "stopped" and seen["analytics"] == 2:
            stop.set()  # this answer is stored; nothing is asked after it
        if cut == "failing" and seen["analytics"] > 2 and seen["failing"]:
            fake.inject(MGMT, Fault(500))  # this attempt fails, and every one after it

    fake.on_request = on_request
    middle = FIRST + dt.timedelta(days=14)  # the older half is FIRST … middle

    with structlog.testing.capture_logs() as logs:
        first_run = _sync(session_factory, settings, keyring, stop=stop)

    newer_half = (str(middle + dt.timedelta(days=1)), str(LAST), 30)
    assert first_run.history.pending == 3  # the account half imported, its two keys not at all
    assert _chunks(logs) == {f"account {mgmt}": [newer_half]}
    if cut == "failing":
        assert first_run.status == "ok"  # the import pauses; the keys themselves synced
        paused = [e for e in logs if e["event"] == "history_import_paused"]
        assert {e["reason"] for e in paused} == {"upstream_unavailable"}
        assert len(paused) == 3
    stored = _values(_rows(session_factory, UsageStats, mgmt))
    assert {pair for pair in stored if pair[0] <= LAST} == set(
        _account_sums(account, middle + dt.timedelta(days=1), LAST)
    )
    with session_factory() as s:
        account_key = s.get(ApiKey, mgmt)
        assert account_key is not None
        assert (account_key.history_reached, account_key.history_done_at) == (
            middle + dt.timedelta(days=1),
            None,
        )

    seen["failing"] = False
    fake.on_request = None
    start = len(fake.requests)
    with structlog.testing.capture_logs() as logs:
        second_run = _sync(session_factory, settings, keyring)

    assert (second_run.status, second_run.history.pending) == ("ok", 0)
    chunks = _chunks(logs)
    # The account asks only for what it lacks; its keys import all of theirs.
    assert chunks.pop(f"account {mgmt}") == [(str(FIRST), str(middle), 30)]
    assert len(chunks) == 2
    for subject_chunks in chunks.values():
        _assert_partition(subject_chunks, FIRST, LAST)
    assert _analytics_requests(fake, start) == [200] * (1 + 2 * 3)
    _assert_complete(session_factory, account, mgmt)


def test_a_run_stopped_during_the_history_import_ends_interrupted(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
) -> None:
    stop = threading.Event()
    fake.on_request = lambda path, _query: stop.set() if path == "/analytics/query" else None

    summary = _sync(session_factory, settings, keyring, stop=stop)

    # The account's answer (asked before the stop) is stored; its two keys are left.
    assert (summary.history.requests, summary.history.pending) == (1, 2)
    assert summary.status == "interrupted"


# --- the two sources ---------------------------------------------------------------------------


def _restate(account: FakeAccount, day: dt.date, usage: Decimal) -> None:
    """OpenRouter restates the first key's spend on ``day``: every row there costs ``usage``."""
    key = account.keys[0]
    rows = [
        {**row, "usage": usage} if str(row["date"])[:10] == day.isoformat() else row
        for row in key.rows
    ]
    replace_key(account, key.hash, rows=rows)


def test_an_activity_answer_replaces_the_analytics_rows_of_its_days(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    pinned_clock: PinnedClock,
) -> None:
    # A run whose clock was three days ahead imported TODAY-57 … TODAY-28 from analytics; the
    # window on TODAY reaches back to TODAY-30.
    ahead = TODAY + dt.timedelta(days=3)
    pinned_clock.at(noon(ahead))
    fake.today = ahead
    assert _sync(session_factory, settings, keyring).history.pending == 0
    overlap = [TODAY - dt.timedelta(days=n) for n in (30, 29, 28)]
    before = _rows(session_factory, UsageStats, mgmt)
    assert {before[(day, m)][1] for day in overlap for m in _models(account)} == {"analytics"}
    _restate(account, overlap[1], Decimal("7.123456789"))

    pinned_clock.at(noon(TODAY))
    fake.today = TODAY
    summary = _sync(session_factory, settings, keyring)

    assert summary.status == "ok"
    # 6 rows changed source, of which 2 changed value too; the rest of the window as it was.
    assert summary.counts.updated == 6
    stored = _rows(session_factory, UsageStats, mgmt)
    window = _account_sums(account, overlap[0], YESTERDAY)
    assert {pair: stored[pair] for pair in window} == {
        pair: (values, "activity") for pair, values in window.items()
    }
    # The restated key was fetched again: its own rows of those days are /activity's too.
    entry = catalogue_of(session_factory, mgmt)[account.keys[0].hash]
    key_rows = _rows(session_factory, KeyUsageStats, entry.id)
    expected = _sums(account.keys[0].rows, overlap[0], YESTERDAY)
    assert {pair: key_rows[pair] for pair in expected} == {
        pair: (values, "activity") for pair, values in expected.items()
    }
    assert key_rows[(overlap[1], _models(account)[0])][0][4] == Decimal("7.123456789")


def test_analytics_never_overwrite_a_day_that_activity_reported(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    pinned_clock: PinnedClock,
) -> None:
    # History import off for the first run: /activity stores TODAY-30 … TODAY-1.
    assert _sync(session_factory, settings.replace("sync", history_days=0), keyring).status == "ok"
    reported = _values(_rows(session_factory, UsageStats, mgmt))
    old_day = TODAY - dt.timedelta(days=30)
    _restate(account, old_day, Decimal("9.5"))  # analytics will say otherwise about that day

    later = TODAY + dt.timedelta(days=2)  # the window has moved past TODAY-30 and TODAY-29
    pinned_clock.at(noon(later))
    fake.today = later
    summary = _sync(session_factory, settings, keyring)

    assert (summary.status, summary.history.pending) == ("ok", 0)
    # The account and its two keys: two models on each of the two days.
    assert summary.history.counts.kept == 3 * 2 * 2
    stored = _rows(session_factory, UsageStats, mgmt)
    for day in (old_day, old_day + dt.timedelta(days=1)):
        for model in _models(account):
            assert stored[(day, model)] == (reported[(day, model)], "activity")
    imported_first = later - dt.timedelta(days=HISTORY_DAYS)
    older = _account_sums(account, imported_first, old_day - dt.timedelta(days=1))
    assert {pair: stored[pair] for pair in older} == {
        pair: (values, "analytics") for pair, values in older.items()
    }


def _models(account: FakeAccount) -> list[str]:
    return sorted({row["model"] for row in account.keys[0].rows})


# --- OpenRouter's limits ------------------------------------------------------------------------


def test_a_429_with_retry_after_is_waited_out_and_counted(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
) -> None:
    # OpenRouter allows 2 analytics requests per 0.25 s here; its Retry-After (1 s at least)
    # is capped at 0.25 s, which is enough for the window to pass.
    account.analytics_per_minute = 2
    account.analytics_window = 0.25
    capped = settings.replace("openrouter", retry_after_max=0.25)

    summary = _sync(session_factory, capped, keyring)

    statuses = _analytics_requests(fake)
    limited = statuses.count(429)
    assert limited >= 1 and statuses.count(200) == 3
    assert (summary.status, summary.history.pending) == ("ok", 0)
    assert summary.history.requests == len(statuses)
    assert summary.history.rate_limit_seconds == pytest.approx(0.25 * limited)
    _assert_complete(session_factory, account, mgmt)


def test_every_analytics_request_waits_its_turn_at_the_limiter_and_the_wait_is_counted(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
) -> None:
    # One request a minute, on a clock of the test's own: the limiter's waits take no time.
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    pace = RateLimiter(1, 60.0, clock=lambda: now[0], sleep=sleep)

    summary = _sync(session_factory, settings, keyring, pace=pace)

    assert _analytics_requests(fake) == [200, 200, 200]
    # The account's answer went first; each key's waited a minute for its turn.
    assert summary.history.rate_limit_seconds == 120.0
    assert now[0] == 120.0
    _assert_complete(session_factory, account, mgmt)


def test_a_key_analytics_cannot_resolve_is_logged_and_never_asked_again(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
) -> None:
    assert _sync(session_factory, settings.replace("sync", history_days=0), keyring).status == "ok"
    gone = account.keys[1]
    replace_key(account, gone.hash, deleted=True)  # catalogued, now unknown to analytics

    with structlog.testing.capture_logs() as logs:
        summary = _sync(session_factory, settings, keyring)

    assert (summary.status, summary.history.pending, summary.history.requests) == ("ok", 0, 3)
    unknown = [e for e in logs if e["event"] == "history_key_unknown"]
    assert [e["subject"] for e in unknown] == [f"account {mgmt} key {gone.hash[:8]}"]
    assert summary.history.unknown == [f"account {mgmt} key {gone.hash[:8]}"]  # reported
    assert unknown[0]["log_level"] == "warning"
    assert any(gone.hash in warning for warning in unknown[0]["warnings"])
    entry = catalogue_of(session_factory, mgmt)[gone.hash]
    assert (entry.history_reached, entry.history_done_at is not None) == (FIRST, True)
    # Its window rows stay; nothing older was made up for it.
    rows = _values(_rows(session_factory, KeyUsageStats, entry.id))
    assert rows == _sums(gone.rows, completed_window(TODAY)[0], YESTERDAY)
    kept = catalogue_of(session_factory, mgmt)[account.keys[0].hash]
    assert _values(_rows(session_factory, KeyUsageStats, kept.id)) == _sums(
        account.keys[0].rows, FIRST, YESTERDAY
    )

    start = len(fake.requests)
    assert _sync(session_factory, settings, keyring).history.requests == 0
    assert _analytics_requests(fake, start) == []


def test_days_between_two_windows_after_a_long_outage_come_from_analytics(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    mgmt: int,
    pinned_clock: PinnedClock,
) -> None:
    # The worker syncs on the 12th of October, then nothing succeeds for 45 days: /activity's
    # window on the 26th of November starts on the 27th of October, 15 days after the last
    # window ended. Those days must not be lost.
    before = TODAY - dt.timedelta(days=45)
    account = fake.add_account(
        MGMT, generate_account(today=TODAY, keys=2, days=120, models=2, seed=33)
    )
    fake.today = before
    pinned_clock.at(noon(before))
    assert _sync(session_factory, settings, keyring).status == "ok"
    fake.today = TODAY
    pinned_clock.at(noon(TODAY))
    start = len(fake.requests)

    with structlog.testing.capture_logs() as logs:
        summary = _sync(session_factory, settings, keyring)

    gap_first, gap_last = before, completed_window(TODAY)[0] - dt.timedelta(days=1)
    assert (gap_last - gap_first).days + 1 == 15
    assert [e["days"] for e in logs if e["event"] == "history_gap"] == [15]
    assert summary.status == "ok"
    # one analytics request each for the account and its two keys, for the 15 days
    assert _analytics_requests(fake, start) == [200, 200, 200]
    stored = _rows(session_factory, UsageStats, mgmt)
    gap = {pair: row for pair, row in stored.items() if gap_first <= pair[0] <= gap_last}
    assert _values(gap) == _account_sums(account, gap_first, gap_last)
    assert {source for _values_, source in gap.values()} == {"analytics"}
    # every day from the oldest imported to yesterday is there now: no hole anywhere
    assert {day for day, _model in stored} == set(
        days.span(before - dt.timedelta(days=HISTORY_DAYS), YESTERDAY)
    )
