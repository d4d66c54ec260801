"""`openrouter-watcher run` as a real subprocess against the fake OpenRouter on 127.0.0.1.

Every daemon here runs on a pinned clock (the testing hook in worker.core.days), and the fake
OpenRouter serves the window of that same day, so nothing depends on the real date.
"""

from __future__ import annotations

import datetime as dt
import os
import pty
import select as io_select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.store.db import create_db_engine, init_db, make_session_factory
from worker.store.models import ApiKey, SyncRun, UsageStats
from worker.testing.activity_data import generate_activity
from worker.testing.clock import noon_iso
from worker.testing.env import clean_env
from worker.testing.fake_openrouter import FakeOpenRouter, fingerprint
from worker.testing.logs import json_events
from worker.testing.postgres import PostgresServer, find_bindir, free_port
from worker.testing.waiting import wait_until
from worker.vault import accounts
from worker.vault.crypto import Keyring

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
TODAY = dt.date(2026, 11, 20)
CLOCK = noon_iso(TODAY)
KEYS = {
    "fast": "sk-or-v1-daemon-fast-0000000000000000000000000000000000000000000001",
    "slow": "sk-or-v1-daemon-slow-0000000000000000000000000000000000000000000002",
    "third": "sk-or-v1-daemon-third-000000000000000000000000000000000000000000003",
}


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=TODAY) as server:
        for seed, key in enumerate(KEYS.values()):
            server.add_key(
                key, management=True, rows=generate_activity(today=TODAY, models=3, seed=seed)
            )
        yield server


def add_keys(url: str, keyring: Keyring) -> None:
    """One user and the three keys above, in a migrated database."""
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    accounts.add_user(factory, "ops@example.com")
    for name, secret in KEYS.items():
        accounts.add_key(factory, keyring, "ops@example.com", name, secret)
    engine.dispose()


@pytest.fixture
def database(sqlite_url: str, keyring: Keyring) -> str:
    """A migrated SQLite file holding one user and the three keys above."""
    add_keys(sqlite_url, keyring)
    return sqlite_url


def daemon_env(
    database: str, fake: FakeOpenRouter, master_key: str, **extra: str
) -> dict[str, str]:
    env = clean_env()
    env.update(
        {
            "OPENROUTER_WATCHER_CONFIG": os.devnull,
            "OPENROUTER_WATCHER_DATABASE_URL": database,
            "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": fake.base_url,
            "OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS": "2",
            "OPENROUTER_WATCHER_OPENROUTER_BACKOFF_INITIAL": "0.01",
            "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
            "OPENROUTER_WATCHER_LOGGING_FORMAT": "json",
            "OPENROUTER_WATCHER_SCHEDULE_SHUTDOWN_GRACE_SECONDS": "20",
            "OPENROUTER_WATCHER_SYNC_CONCURRENCY": "1",
            "OPENROUTER_WATCHER_TESTING_CLOCK": CLOCK,
            # The HTTP server runs beside every daemon here, on a port of its own.
            "OPENROUTER_WATCHER_HTTP_LISTEN": "127.0.0.1:0",
            # These tests count the sync's requests: no live poll beside it.
            "OPENROUTER_WATCHER_LIVE_INTERVAL_MINUTES": "0",
        }
    )
    env.update(extra)
    return env


def start(env: dict[str, str], tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([CLI, "run"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    return proc, log


def usage_rows(url: str) -> dict[str, int]:
    engine = create_db_engine(url)
    with Session(engine) as session:
        counts = dict(
            session.execute(
                select(ApiKey.name, func.count(UsageStats.id))
                .join(UsageStats, isouter=True)
                .group_by(ApiKey.name)
            ).all()
        )
    engine.dispose()
    return counts  # type: ignore[return-value]


def runs(url: str) -> list[tuple[str, str]]:
    engine = create_db_engine(url)
    with Session(engine) as session:
        result = [
            (r.trigger, r.status) for r in session.scalars(select(SyncRun).order_by(SyncRun.id))
        ]
    engine.dispose()
    return result


def expected_rows(fake_rows: list[dict[str, object]]) -> int:
    return len({(str(r["date"])[:10], r["model"]) for r in fake_rows})


def synced(log: Path) -> list[dict[str, Any]]:
    """The heartbeats of the runs that synced (not those skipped for a run in progress)."""
    return [e for e in json_events(log) if e.get("event") == "sync_heartbeat" and e.get("ran")]


def test_daemon_syncs_on_schedule_and_stops_cleanly(
    tmp_path: Path, database: str, fake: FakeOpenRouter, master_key: str
) -> None:
    env = daemon_env(database, fake, master_key, OPENROUTER_WATCHER_SCHEDULE_INTERVAL_SECONDS="1")
    proc, log = start(env, tmp_path, "daemon")
    try:
        # the start-up run and at least one interval run (an interval run that came while the
        # previous one still ran skipped it, and logged a heartbeat with ran=false)
        wait_until(lambda: len(synced(log)) >= 2, timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = usage_rows(database)
    assert all(rows[name] > 0 for name in KEYS)
    assert all(trigger == "schedule" for trigger, _ in runs(database))
    heartbeat = synced(log)[0]
    assert heartbeat["next_run_at"] and heartbeat["keys_ok"] == len(KEYS)
    assert master_key not in log.read_text()
    assert KEYS["fast"] not in log.read_text()


def test_sigterm_during_slow_sync_exits_zero_and_leaves_no_partial_key(
    tmp_path: Path, database: str, fake: FakeOpenRouter, master_key: str
) -> None:
    fake.latency = 2.0  # every request takes 2 s: the first key is in flight when we signal
    env = daemon_env(database, fake, master_key)
    proc, log = start(env, tmp_path, "daemon")
    try:
        wait_until(lambda: fake.request_count() >= 1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
        assert time.monotonic() - started < 20
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = usage_rows(database)
    full = {
        name: expected_rows(generate_activity(today=TODAY, models=3, seed=seed))
        for seed, name in enumerate(KEYS)
    }
    # concurrency 1: every key is either whole or absent, never partial, and the stop came
    # before the last key started
    assert all(rows[name] in (0, full[name]) for name in KEYS), rows
    assert rows["third"] == 0
    # the third key was never asked for
    assert fingerprint(KEYS["third"]) not in {r.key_fingerprint for r in fake.requests}
    assert runs(database) == [("schedule", "interrupted")]
    assert any(e.get("event") == "shutdown_requested" for e in json_events(log))


def test_second_daemon_skips_while_first_syncs(
    tmp_path: Path, database: str, fake: FakeOpenRouter, master_key: str
) -> None:
    # The first daemon's first request is held until the second daemon has tried to sync: a
    # condition, not a race between a slow answer and the second daemon's start-up.
    asked, release = threading.Event(), threading.Event()

    def hold(_path: str, _query: dict[str, str]) -> None:
        asked.set()
        release.wait(60)

    fake.on_request = hold
    env = daemon_env(database, fake, master_key)
    first, first_log = start(env, tmp_path, "first")
    second = None
    try:
        wait_until(asked.is_set)
        second, second_log = start(env, tmp_path, "second")
        wait_until(lambda: any(e.get("event") == "sync_skipped" for e in json_events(second_log)))
        release.set()
        # all requests so far came from the first daemon: still one key at a time
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
        wait_until(lambda: any(e.get("event") == "sync_heartbeat" for e in json_events(first_log)))
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
    finally:
        release.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    # one /activity per key, from the first daemon's one run only
    assert [r.path for r in fake.requests].count("/api/v1/activity") == len(KEYS)
    assert [status for _, status in runs(database)] == ["ok"]


# Run as `python -c`: the daemon, with SIGTERM sent from inside ThreadPoolExecutor.submit, where
# the thread pool holds its (non-reentrant) shutdown lock while it starts a job's thread: the
# moment a signal landed in CI, right after a daemon's start-up job began.
SIGNAL_INSIDE_SUBMIT = """
import os, signal, sys
from concurrent.futures import thread
from worker.cli import main

start_thread = thread.ThreadPoolExecutor._adjust_thread_count
sent = []

def signalled_while_submitting(self):
    if not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode, here
    start_thread(self)

thread.ThreadPoolExecutor._adjust_thread_count = signalled_while_submitting
sys.exit(main(["run"]))
"""


def test_signal_while_the_scheduler_starts_a_job_stops_the_daemon(
    tmp_path: Path, database: str, fake: FakeOpenRouter, master_key: str
) -> None:
    env = daemon_env(database, fake, master_key, OPENROUTER_WATCHER_HTTP_LISTEN="")
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SIGNAL_INSIDE_SUBMIT], env=env, stdout=out, stderr=out
        )
    try:
        # A handler that took the pool's lock deadlocked here until the grace time, or forever.
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = json_events(log)
    names = [e.get("event") for e in events]
    assert "shutdown_requested" in names and names[-1] == "daemon_stopped", names
    # and no error from APScheduler's loop racing the stop (a one-shot job's removal did)
    assert not [e for e in events if e.get("level") == "error"], events


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("config", "invalid configuration"),
        ("master_key", "master key"),
        ("schema", "run make migrate"),
    ],
)
def test_startup_failures_exit_2_with_one_line(
    tmp_path: Path, sqlite_url: str, master_key: str, case: str, message: str
) -> None:
    env = clean_env()
    env.update(
        {
            "OPENROUTER_WATCHER_CONFIG": os.devnull,
            "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
            "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
            "OPENROUTER_WATCHER_LOGGING_FORMAT": "json",
            "OPENROUTER_WATCHER_TESTING_CLOCK": CLOCK,
            "OPENROUTER_WATCHER_HTTP_LISTEN": "127.0.0.1:0",
        }
    )
    if case == "config":
        env["OPENROUTER_WATCHER_SCHEDULE_CRON"] = "not a cron"
    elif case == "master_key":
        del env["OPENROUTER_WATCHER_ENCRYPTION_KEY"]
    else:
        env["OPENROUTER_WATCHER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    result = subprocess.run(
        [CLI, "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_local_key_file_is_created_once_with_mode_0600(
    tmp_path: Path, database: str, fake: FakeOpenRouter
) -> None:
    env = daemon_env(database, fake, "", OPENROUTER_WATCHER_SCHEDULE_RUN_AT_STARTUP="false")
    del env["OPENROUTER_WATCHER_ENCRYPTION_KEY"]
    key_file = tmp_path / "data" / "master.key"
    log = tmp_path / "local.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [CLI, "run", "--local-key-file", str(key_file)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: any(e.get("event") == "daemon_started" for e in json_events(log)))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "created a new master key" in log.read_text()
    assert key_file.read_text().strip() not in log.read_text()


# --- the database at start-up ---------------------------------------------------------------

DB_PASSWORD = "s3cret-db-password"


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def unavailable(log: Path) -> list[dict[str, object]]:
    return [e for e in json_events(log) if e.get("event") == "database_unavailable"]


def alive(proc: subprocess.Popen[bytes], log: Path) -> bool:
    """True while the daemon runs; fails the test at once (with its log) if it exited."""
    if proc.poll() is not None:
        raise AssertionError(f"the daemon exited with {proc.returncode}:\n{log.read_text()}")
    return True


def test_daemon_waits_for_a_database_that_starts_later_then_syncs(
    tmp_path: Path, fake: FakeOpenRouter, master_key: str, keyring: Keyring
) -> None:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (initdb, postgres) found: set PG_BINDIR")
    server = PostgresServer(bindir)  # its port is chosen, nothing listens on it yet
    # trust authentication ignores the password: it is here to be hidden in the logs
    url = f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:{server.port}/watcher"
    proc, log = start(daemon_env(url, fake, master_key), tmp_path, "daemon")
    try:
        wait_until(lambda: alive(proc, log) and len(unavailable(log)) >= 2)
        server.start()
        # Migrated and given its keys under another name, then renamed: the daemon sees no
        # database, or a complete one (a half-migrated one would be a schema error, exit 2).
        staging = server.create_database("staging")
        engine = create_db_engine(staging)
        init_db(engine)
        engine.dispose()
        add_keys(staging, keyring)
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("ALTER DATABASE staging RENAME TO watcher")
        wait_until(
            lambda: (
                alive(proc, log)
                and any(e.get("event") == "sync_heartbeat" for e in json_events(log))
            ),
            timeout=60,
        )
        assert stop(proc) == 0
        assert all(count > 0 for count in usage_rows(url).values())
        assert [status for _, status in runs(url)] == ["ok"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
    attempts = unavailable(log)
    assert [e["attempt"] for e in attempts] == list(range(1, len(attempts) + 1))
    for e in attempts:
        assert e["level"] == "warning"
        assert e["url"] == f"postgresql+psycopg://postgres:***@127.0.0.1:{server.port}/watcher"
        assert 0 < float(str(e["retry_in_seconds"])) <= 60
        assert e["error"]
    assert [e["event"] for e in json_events(log)].index("database_available") > 0
    assert DB_PASSWORD not in log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_waiting_for_the_database_exits_0(
    tmp_path: Path, fake: FakeOpenRouter, master_key: str, sig: int
) -> None:
    url = f"postgresql+psycopg://watcher:{DB_PASSWORD}@127.0.0.1:{free_port()}/watcher"
    proc, log = start(daemon_env(url, fake, master_key), tmp_path, "daemon")
    try:
        wait_until(lambda: alive(proc, log) and len(unavailable(log)) >= 1)
        attempts = len(unavailable(log))
        assert stop(proc, sig) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    names = [e["event"] for e in json_events(log)]
    assert len(unavailable(log)) == attempts  # no attempt after the signal
    assert names[-2:] == ["shutdown_requested", "daemon_stopped"]
    assert "daemon_started" not in names and fake.request_count() == 0
    assert "Traceback" not in log.read_text()


def test_daemon_without_keys_says_how_to_add_one_and_keeps_running(
    tmp_path: Path, sqlite_url: str, fake: FakeOpenRouter, master_key: str
) -> None:
    env = daemon_env(sqlite_url, fake, master_key, OPENROUTER_WATCHER_SCHEDULE_INTERVAL_SECONDS="1")
    log = tmp_path / "daemon.log"
    # stderr on a terminal (a pseudo-terminal): the advice is printed there for a person too
    controller, terminal = pty.openpty()
    seen = bytearray()

    def read_terminal() -> str:
        while io_select.select([controller], [], [], 0)[0]:
            try:
                seen.extend(os.read(controller, 4096))
            except OSError:  # the other side closed
                break
        return seen.decode(errors="replace")

    with log.open("wb") as fh:
        proc = subprocess.Popen([CLI, "run"], env=env, stdout=fh, stderr=terminal)
    os.close(terminal)
    try:
        wait_until(lambda: alive(proc, log) and "no OpenRouter keys registered" in read_terminal())
        # it keeps running and syncing (nothing, for now)
        wait_until(
            lambda: (
                alive(proc, log)
                and any(e.get("event") == "sync_heartbeat" for e in json_events(log))
            )
        )
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        terminal_text = read_terminal()
        os.close(controller)
    (advice,) = [e for e in json_events(log) if e.get("event") == "no_keys_registered"]
    command = (
        "printf '%s' \"$KEY\" | openrouter-watcher keys add --user EMAIL --name NAME  "
        "(users add EMAIL first)"
    )
    assert advice["level"] == "warning"
    assert str(advice["hint"]).startswith("no OpenRouter keys registered: add one with  ")
    assert str(advice["hint"]).endswith(command)
    assert command in terminal_text
    assert fake.request_count() == 0
