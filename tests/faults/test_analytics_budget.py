"""OpenRouter's 64 analytics requests a minute hold across processes: a backfill started within
a minute of a sync that imported history waits for the budget instead of collecting 429s.

Two real processes, one after the other, against the fake OpenRouter in this process, whose
account allows 64 ``/analytics/query`` requests in any 60 s and answers the 65th with 429 and
``Retry-After: 5`` (what OpenRouter was seen to send). The sync imports the history of an
account of 40 keys (41 requests); the backfill of six old days asks for the same 41 subjects.
Before the budget was kept in the database, the backfill's 24th request was the minute's 65th:
429, retried until the attempts ran out, and the account failed ``rate_limited`` (exit 1).

Waiting out a real minute would make this test a minute long, so time is skipped instead: the
sync runs on a pinned clock, and before the backfill both the fake's window clock and the
backfill's pinned clock move 50 s on, leaving the last ~10 s of the minute to wait for real.
The backfill's clock is set from the sync's: its first request as the database recorded it
and as the fake received it are the same instant.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from worker.store.db import create_db_engine, make_session_factory
from worker.store.models import AnalyticsRequest, SyncKeyResult, UsageStats, UTCDateTime
from worker.testing.env import clean_env
from worker.testing.fake_account import generate_account
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.logs import json_events
from worker.vault import accounts
from worker.vault.crypto import Keyring

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
TODAY = dt.date(2026, 6, 15)
START = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
KEYS = 40  # the account and its keys: 41 analytics requests per pass
SKIPPED = 50.0  # seconds of the minute that pass "between" the two processes
MANAGEMENT_KEY = "sk-or-v1-budget-" + "0" * 48


class Clock:
    """The fake's window clock: real time plus the seconds the test skipped."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


@pytest.fixture
def world(
    sqlite_url: str, master_key: str, keyring: Keyring, tmp_path: Path
) -> Iterator[tuple[FakeOpenRouter, Clock, dict[str, str]]]:
    clock = Clock()
    with FakeOpenRouter(today=TODAY) as fake:
        account = generate_account(today=TODAY, keys=KEYS, days=120, models=2, seed=7)
        account.analytics_retry_after = 5
        account.clock = clock
        fake.add_account(MANAGEMENT_KEY, account)
        engine = create_db_engine(sqlite_url)
        factory = make_session_factory(engine)
        accounts.add_user(factory, "ops@example.com")
        accounts.add_key(factory, keyring, "ops@example.com", "production", MANAGEMENT_KEY)
        engine.dispose()
        env = clean_env(
            OPENROUTER_WATCHER_CONFIG=os.devnull,
            OPENROUTER_WATCHER_DATABASE_URL=sqlite_url,
            OPENROUTER_WATCHER_OPENROUTER_BASE_URL=fake.base_url,
            OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS="2",
            OPENROUTER_WATCHER_ENCRYPTION_KEY=master_key,
            OPENROUTER_WATCHER_LOGGING_FORMAT="json",
        )
        yield fake, clock, env


def _run(env: dict[str, str], clock: dt.datetime, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env={**env, "OPENROUTER_WATCHER_TESTING_CLOCK": clock.isoformat()},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _first_sent(url: str) -> dt.datetime:
    """When the sync recorded its first analytics request (by its own clock)."""
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        sent = session.scalar(select(func.min(AnalyticsRequest.sent_at, type_=UTCDateTime())))
    engine.dispose()
    assert sent is not None
    return sent


def _analytics(fake: FakeOpenRouter) -> list[int]:
    return [r.status for r in fake.requests if r.path.endswith("/analytics/query")]


def test_a_backfill_right_after_a_history_import_waits_for_the_minutes_budget(
    world: tuple[FakeOpenRouter, Clock, dict[str, str]], sqlite_url: str
) -> None:
    fake, clock, env = world
    arrived: list[float] = []

    def note(path: str, _query: dict[str, str]) -> None:
        if path == "/analytics/query" and not arrived:
            arrived.append(time.monotonic())

    fake.on_request = note
    synced = _run(env, START, "sync")
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert _analytics(fake) == [200] * (KEYS + 1)

    # 50 s of the minute pass for the fake's window and for the backfill's clock alike; the
    # sync's clock read START at this instant of this process's monotonic clock:
    started = arrived[0] - (_first_sent(sqlite_url) - START).total_seconds()
    clock.skipped = SKIPPED
    later = START + dt.timedelta(seconds=time.monotonic() - started + SKIPPED)
    first, last = TODAY - dt.timedelta(days=100), TODAY - dt.timedelta(days=95)
    filled = _run(env, later, "backfill", "--since", str(first), "--until", str(last))

    assert filled.returncode == 0, filled.stdout[-2000:] + filled.stderr[-3000:]
    # Every request of the minute was answered: the 24th of the backfill waited for its turn.
    assert _analytics(fake) == [200] * (2 * (KEYS + 1))
    finished = [e for e in json_events(filled.stderr) if e.get("event") == "sync_finished"]
    assert finished and finished[-1]["history"]["rate_limit_seconds"] > 0
    engine = create_db_engine(sqlite_url)
    with make_session_factory(engine)() as session:
        failed = session.scalars(
            select(SyncKeyResult.reason).where(SyncKeyResult.status == "failed")
        ).all()
        days = set(session.scalars(select(UsageStats.date).where(UsageStats.date <= last)))
    engine.dispose()
    assert failed == []
    assert {first, last} <= days
