"""`openrouter-watcher run` polls live spend beside the sync, as a real subprocess: a poll
never waits for a sync, an alert is delivered once, and a restart delivers nothing new."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from worker.store.db import create_db_engine, make_session_factory
from worker.store.models import KIND_MANAGEMENT
from worker.testing.clock import noon_iso
from worker.testing.env import clean_env
from worker.testing.fake_account import generate_account, replace_key
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.logs import json_events
from worker.testing.receivers import WebhookReceiver
from worker.testing.waiting import wait_until
from worker.vault import accounts
from worker.vault.crypto import Keyring

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
CLOCK = noon_iso(dt.date(2026, 11, 20))
MANAGEMENT = "sk-or-v1-daemon-live-" + "5" * 44


def events(log: Path, name: str) -> list[dict[str, object]]:
    return [event for event in json_events(log) if event.get("event") == name]


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def test_the_daemon_polls_beside_a_slow_sync_and_a_restart_sends_nothing_new(
    tmp_path: Path, sqlite_url: str, keyring: Keyring, master_key: str, hook: WebhookReceiver
) -> None:
    today = dt.date(2026, 11, 20)
    world = generate_account(today=today, keys=2, days=3)
    release = threading.Event()
    with FakeOpenRouter(today=today) as fake:
        fake.add_account(MANAGEMENT, world)
        # The sync's /activity waits until released: the poll must not wait with it.
        fake.on_request = lambda path, _query: release.wait(30) if path == "/activity" else None
        engine = create_db_engine(sqlite_url)
        factory = make_session_factory(engine)
        accounts.add_user(factory, "ops@example.com")
        accounts.add_key(factory, keyring, "ops@example.com", "acct", MANAGEMENT, KIND_MANAGEMENT)
        engine.dispose()
        config = tmp_path / "config.toml"
        config.write_text(
            f'[[channels]]\nname = "hook"\nurl = "{hook.url("/alerts")}"\n'
            '[[alerts]]\nname = "spend"\nmetric = "spend_today"\nabove = [5, 10]\nper = "key"\n'
            'notify = ["hook"]\n'
        )
        env = {
            **clean_env(),
            "OPENROUTER_WATCHER_CONFIG": str(config),
            "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
            "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": fake.base_url,
            "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
            "OPENROUTER_WATCHER_LOGGING_FORMAT": "json",
            "OPENROUTER_WATCHER_TESTING_CLOCK": CLOCK,
            "OPENROUTER_WATCHER_LIVE_INTERVAL_MINUTES": "0",
            "OPENROUTER_WATCHER_LIVE_INTERVAL_SECONDS": "1",
        }
        replace_key(world, world.keys[0].hash, spend_today=Decimal("7"))

        def start(name: str) -> tuple[subprocess.Popen[bytes], Path]:
            log = tmp_path / f"{name}.log"
            with log.open("wb") as fh:
                proc = subprocess.Popen([CLI, "run"], env=env, stdout=fh, stderr=subprocess.STDOUT)
            return proc, log

        def stop(proc: subprocess.Popen[bytes]) -> None:
            release.set()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0

        proc, log = start("first")
        try:
            [message] = hook.wait_for(1, timeout=30)
            # Delivered while the start-up sync still waits for /activity.
            assert events(log, "sync_heartbeat") == []
            assert '"key 0"' in message["json"]["title"]
            release.set()
            wait_until(lambda: len(events(log, "sync_heartbeat")) == 1)
            polls = len(events(log, "poll_finished"))
            wait_until(lambda: len(events(log, "poll_finished")) >= polls + 2)
            assert len(hook.received) == 1
            stop(proc)

            release.clear()
            proc, log = start("second")
            wait_until(lambda: len(events(log, "poll_finished")) >= 2)
            assert len(hook.received) == 1  # the restart sent nothing new
            replace_key(world, world.keys[0].hash, spend_today=Decimal("12"))
            hook.wait_for(2)
            polls = len(events(log, "poll_finished"))
            wait_until(lambda: len(events(log, "poll_finished")) >= polls + 2)
            assert len(hook.received) == 2
            stop(proc)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text() + (tmp_path / "first.log").read_text()
    assert MANAGEMENT not in text and master_key not in text
    assert hook.url("/alerts") not in text and str(hook.port) not in text
