"""Guards across real processes, on SQLite and PostgreSQL: a poll killed (SIGKILL) while its
``PATCH /keys/{hash}`` is on the wire, and two polls started at once. Either way the key is
changed once, the action recorded once, and nothing is sent twice.

The fake OpenRouter runs in this process (its ``on_request`` hook sees the PATCH arrive), the
worker as ``openrouter-watcher poll`` processes with a configuration whose rule disables a key
that spent past its last threshold, in ``[guards] mode = "enforce"``.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from worker.store import guards as store
from worker.store.db import create_db_engine, make_session_factory
from worker.testing.clock import noon_iso
from worker.testing.env import clean_env
from worker.testing.fake_account import FakeAccount, generate_account
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.receivers import WebhookReceiver
from worker.vault import accounts
from worker.vault.crypto import Keyring

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
DAY = dt.date(2026, 11, 20)
MANAGEMENT = "sk-or-v1-guard-processes-" + "0" * 40
CONFIG = """
[guards]
mode = "enforce"

[[channels]]
name = "ops"
url = "{hook}"

[[alerts]]
name = "runaway"
metric = "spend_today"
above = 5
per = "key"
keys = ["ci-main"]
act = "disable"
notify = ["ops"]
"""


@pytest.fixture
def world(
    db_url: str, master_key: str, keyring: Keyring, tmp_path: Path
) -> Iterator[tuple[FakeOpenRouter, FakeAccount, dict[str, str], str]]:
    day = DAY
    with FakeOpenRouter(today=day) as fake, WebhookReceiver() as hook:
        account = generate_account(today=day, keys=2, days=0)
        account.keys[0].name, account.keys[0].spend_today = "ci-main", Decimal(9)
        fake.add_account(MANAGEMENT, account)
        engine = create_db_engine(db_url)
        factory = make_session_factory(engine)
        accounts.add_user(factory, "ops@example.com")
        accounts.add_key(factory, keyring, "ops@example.com", "production", MANAGEMENT)
        engine.dispose()
        config = tmp_path / "config.toml"
        config.write_text(CONFIG.format(hook=hook.url("/hook")))
        env = clean_env(
            OPENROUTER_WATCHER_CONFIG=str(config),
            OPENROUTER_WATCHER_DATABASE_URL=db_url,
            OPENROUTER_WATCHER_OPENROUTER_BASE_URL=fake.base_url,
            OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS="1",
            OPENROUTER_WATCHER_ENCRYPTION_KEY=master_key,
            OPENROUTER_WATCHER_LOGGING_FORMAT="json",
            OPENROUTER_WATCHER_TESTING_CLOCK=noon_iso(day),
        )
        yield fake, account, env, db_url


def _spawn(env: dict[str, str], tmp: Path, name: str) -> subprocess.Popen[bytes]:
    """``openrouter-watcher poll``, its output in a file (read by a failing assertion)."""
    with open(tmp / f"{name}.out", "wb") as out:
        return subprocess.Popen([CLI, "poll"], env=env, stdout=out, stderr=subprocess.STDOUT)


def _patches(fake: FakeOpenRouter) -> list[int]:
    return [r.status for r in fake.requests if r.path.startswith("/api/v1/keys/")]


def _actions(url: str) -> list[store.Action]:
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        found = store.history(session)
    engine.dispose()
    return found


def test_a_poll_killed_while_its_change_is_sent_is_recorded_once_by_the_next(
    world: tuple[FakeOpenRouter, FakeAccount, dict[str, str], str], tmp_path: Path
) -> None:
    fake, account, env, url = world
    killed: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def kill_on_patch(path: str, _query: dict[str, str]) -> None:
        if path.startswith("/keys/") and proc is not None and not killed:
            os.kill(proc.pid, signal.SIGKILL)  # the PATCH still arrives and is applied
            killed.append(proc.pid)

    fake.on_request = kill_on_patch
    proc = _spawn(env, tmp_path, "first")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert killed and account.keys[0].disabled is True  # changed at OpenRouter…
    assert [a.status for a in _actions(url)] == ["pending"]  # …but not recorded as sent
    fake.on_request = None

    again = subprocess.run([CLI, "poll"], env=env, capture_output=True, timeout=60)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    (action,) = _actions(url)
    assert action.status == "sent" and action.attempts == 0  # seen in place: nothing sent
    assert _patches(fake) == [200]  # the one the killed process sent


def test_two_polls_at_once_change_the_key_once(
    world: tuple[FakeOpenRouter, FakeAccount, dict[str, str], str], tmp_path: Path
) -> None:
    fake, account, env, url = world
    fake.latency = 0.3  # each answer takes a while: the two polls overlap
    first, second = _spawn(env, tmp_path, "a"), _spawn(env, tmp_path, "b")
    deadline = time.monotonic() + 60
    codes = [first.wait(timeout=60), second.wait(timeout=max(1, deadline - time.monotonic()))]
    # One polled and acted; the other found the poll lock taken (exit 1) or, if it started
    # after the first had finished, polled and found the rule already acted in this period.
    assert 0 in codes and set(codes) <= {0, 1}
    assert [(a.key_name, a.status) for a in _actions(url)] == [("ci-main", "sent")]
    assert _patches(fake) == [200]
    assert account.keys[0].disabled is True and account.keys[1].disabled is False
