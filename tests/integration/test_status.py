"""`openrouter-watcher status`: per-key health after good and failed runs, as a health check.

The command runs in-process (the ``cli`` fixture), on the pinned day (``pinned_clock``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from worker import demo
from worker.config import ScheduleSettings, load_settings
from worker.core.days import utc_today
from worker.reports.status import collect_status, next_run_time
from worker.store.db import create_db_engine, make_session_factory
from worker.sync.run import run_sync
from worker.testing.activity_data import generate_activity
from worker.testing.clock import PinnedClock
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.vault import accounts
from worker.vault.crypto import Keyring

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py
GOOD = "sk-or-v1-status-good-000000000000000000000000000000000000000000000001"
FLAKY = "sk-or-v1-status-flaky-00000000000000000000000000000000000000000000002"


def _add_keys(url: str, keyring: Keyring) -> None:
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    accounts.add_user(factory, "ops@example.com")
    for name, secret in (("good", GOOD), ("flaky", FLAKY)):
        accounts.add_key(factory, keyring, "ops@example.com", name, secret)
    engine.dispose()


def _sync(url: str, keyring: Keyring, fake: FakeOpenRouter) -> None:
    settings = load_settings(
        None,
        env={
            "OPENROUTER_WATCHER_CONFIG": os.devnull,
            "OPENROUTER_WATCHER_DATABASE_URL": url,
            "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": fake.base_url,
            "OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS": "1",
        },
    )
    engine = create_db_engine(url)
    run_sync(make_session_factory(engine), settings, keyring, trigger="sync")
    engine.dispose()


@pytest.fixture
def status(cli: Cli, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, master_key: str) -> Cli:
    """``status(*args)`` is ``openrouter-watcher status *args`` on the test database."""
    monkeypatch.setenv("OPENROUTER_WATCHER_CONFIG", os.devnull)
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_ENCRYPTION_KEY", master_key)
    return lambda *args, **kwargs: cli("status", *args, **kwargs)


def test_status_after_a_good_then_a_failed_run(
    status: Cli, sqlite_url: str, keyring: Keyring, pinned_clock: PinnedClock
) -> None:
    today = utc_today()
    assert today == pinned_clock.day
    _add_keys(sqlite_url, keyring)
    with FakeOpenRouter(today=today) as fake:
        fake.add_key(GOOD, rows=generate_activity(today=today, models=2, seed=1))
        fake.add_key(FLAKY, rows=generate_activity(today=today, models=3, seed=2))
        _sync(sqlite_url, keyring, fake)

        code, out, err = status("--json")
        assert code == 0, err
        body = json.loads(out)
        assert body["healthy"] is True
        by_name = {k["name"]: k for k in body["keys"]}
        assert by_name["good"]["last_status"] == "ok"
        assert by_name["good"]["kind"] == "management"
        assert by_name["good"]["rows"] > 0
        assert by_name["good"]["newest_date"] == (today - dt.timedelta(days=1)).isoformat()
        assert body["last_run"]["status"] == "ok" and body["next_run_at"]

        fake.fail_forever(FLAKY, Fault(status=500))
        _sync(sqlite_url, keyring, fake)

    code, out, err = status()
    assert code == 1
    assert "key 2 last error:" in out
    assert "last run: #2 sync failed" in out
    assert GOOD not in out + err and FLAKY not in out
    as_json = json.loads(status("--json")[1])
    flaky = next(k for k in as_json["keys"] if k["name"] == "flaky")
    # the rows of the earlier good run are still held and the last success is remembered
    assert flaky["last_status"] == "failed" and flaky["rows"] > 0 and flaky["last_success_at"]


def test_status_of_an_empty_database_is_healthy_and_says_never(status: Cli) -> None:
    code, out, err = status(env={"OPENROUTER_WATCHER_ENCRYPTION_KEY": None})  # none needed
    assert code == 0, err
    assert "last run: never" in out


def test_status_collects_on_postgres_too(postgres_url: str, keyring: Keyring) -> None:
    _add_keys(postgres_url, keyring)
    engine = create_db_engine(postgres_url)
    with Session(engine) as session:
        status = collect_status(session, ScheduleSettings())
    engine.dispose()
    assert [(k.name, k.kind, k.last_status, k.rows) for k in status.keys] == [
        ("good", "unknown", None, 0),
        ("flaky", "unknown", None, 0),
    ]
    assert status.healthy and status.last_run is None


@pytest.mark.parametrize(
    ("cron", "interval", "now", "expected"),
    [
        ("20 0 * * *", 0, "2026-11-26T10:00:00", "2026-11-27T00:20:00"),
        ("20 0 * * *", 0, "2026-11-26T00:10:00", "2026-11-26T00:20:00"),
        ("20 0 * * *", 300, "2026-11-26T10:00:00", "2026-11-26T10:05:00"),
    ],
)
def test_next_run_time_is_the_earliest_trigger(
    cron: str, interval: int, now: str, expected: str
) -> None:
    schedule = ScheduleSettings(cron=cron, interval_seconds=interval)
    at = dt.datetime.fromisoformat(now).replace(tzinfo=dt.UTC)
    assert next_run_time(schedule, at) == dt.datetime.fromisoformat(expected).replace(tzinfo=dt.UTC)


def test_make_demo_runs_the_whole_pipeline_offline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pinned_clock: PinnedClock,
) -> None:
    """`make demo` is ``python -m worker.demo``: its main(), in-process, from an empty directory."""
    for name in [v for v in os.environ if v.startswith("OPENROUTER_WATCHER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    saved = dict(os.environ)
    try:
        code = demo.main()
    finally:
        # The demo points OPENROUTER_WATCHER_* at its own database and fake: undo that.
        os.environ.clear()
        os.environ.update(saved)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "4 ok / 0 failed" in out
    assert "spend by model" in out and "spend by day" in out and "spend by key" in out
    # A live poll, and its one alert delivered to the local webhook receiver.
    assert "alerts: 1 fired; notifications: 1 sent, 0 failed" in out
    assert "[local webhook receiver got] [openrouter-watcher] daily-spend:" in out
    assert "sk-or-v1-demo" not in out + err
    assert (tmp_path / "data" / "demo" / "demo.db").exists()
    # One guard in dry-run (the alert says what it would do), one declared limit enforced.
    assert 'Guard (dry-run): would cap to $7.42 a day key "key 2"' in out
    assert 'changed key "key 1" of account "team": no limit → $10.00 daily' in out
    assert "1 changed, 0 failed, 0 already as declared" in out
