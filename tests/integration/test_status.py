"""`openrouter-watcher status`: per-key health after good and failed runs, as a health check."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from worker import accounts
from worker.cli import main
from worker.config import ScheduleSettings, load_settings
from worker.crypto import Keyring
from worker.days import utc_today
from worker.db import create_db_engine, make_session_factory
from worker.status import collect_status, next_run_time
from worker.sync import run_sync
from worker.testing.activity_data import generate_activity
from worker.testing.env import clean_env
from worker.testing.fake_openrouter import FakeOpenRouter, Fault

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
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


def _status(url: str, master_key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    env.update(
        {
            "OPENROUTER_WATCHER_CONFIG": os.devnull,
            "OPENROUTER_WATCHER_DATABASE_URL": url,
            "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
        }
    )
    return subprocess.run(
        [CLI, "status", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_status_after_a_good_then_a_failed_run(
    sqlite_url: str, keyring: Keyring, master_key: str
) -> None:
    today = utc_today()
    _add_keys(sqlite_url, keyring)
    with FakeOpenRouter(today=today) as fake:
        fake.add_key(GOOD, rows=generate_activity(today=today, models=2, seed=1))
        fake.add_key(FLAKY, rows=generate_activity(today=today, models=3, seed=2))
        _sync(sqlite_url, keyring, fake)

        healthy = _status(sqlite_url, master_key, "--json")
        assert healthy.returncode == 0, healthy.stderr
        body = json.loads(healthy.stdout)
        assert body["healthy"] is True
        by_name = {k["name"]: k for k in body["keys"]}
        assert by_name["good"]["last_status"] == "ok"
        assert by_name["good"]["kind"] == "management"
        assert by_name["good"]["rows"] > 0
        assert by_name["good"]["newest_date"] == (today - dt.timedelta(days=1)).isoformat()
        assert body["last_run"]["status"] == "ok" and body["next_run_at"]

        fake.fail_forever(FLAKY, Fault(status=500))
        _sync(sqlite_url, keyring, fake)

    failed = _status(sqlite_url, master_key)
    assert failed.returncode == 1
    assert "key 2 last error:" in failed.stdout
    assert "last run: #2 sync failed" in failed.stdout
    assert GOOD not in failed.stdout + failed.stderr and FLAKY not in failed.stdout
    as_json = json.loads(_status(sqlite_url, master_key, "--json").stdout)
    flaky = next(k for k in as_json["keys"] if k["name"] == "flaky")
    # the rows of the earlier good run are still held and the last success is remembered
    assert flaky["last_status"] == "failed" and flaky["rows"] > 0 and flaky["last_success_at"]


def test_status_of_an_empty_database_is_healthy_and_says_never(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setenv("OPENROUTER_WATCHER_CONFIG", os.devnull)
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", sqlite_url)
    code = main(["status"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert "last run: never" in out.getvalue()


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


def test_make_demo_runs_the_whole_pipeline_offline(tmp_path: Path) -> None:
    env = clean_env()
    result = subprocess.run(
        [sys.executable, "-m", "worker.demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "4 ok / 0 failed" in result.stdout
    assert "spend by model" in result.stdout and "spend by day" in result.stdout
    # A live poll, and its one alert delivered to the local webhook receiver.
    assert "alerts: 1 fired; notifications: 1 sent, 0 failed" in result.stdout
    assert "[local webhook receiver got] [openrouter-watcher] daily-spend:" in result.stdout
    assert "sk-or-v1-demo" not in result.stdout + result.stderr
    assert (tmp_path / "data" / "demo" / "demo.db").exists()
