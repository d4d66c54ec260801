"""The live progress line of `sync` and `backfill`: real processes on a pseudo-terminal, against the
fake OpenRouter on 127.0.0.1.

On a terminal, stderr shows one line redrawn in place (carriage return, clear line) with the
counts, erased before the summary; piped, or with --json, there is no trace of it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from worker.commands.progress import CLEAR
from worker.store.db import create_db_engine, make_session_factory
from worker.testing.clock import noon_iso
from worker.testing.env import clean_env
from worker.testing.fake_account import generate_account
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.vault import accounts
from worker.vault.crypto import Keyring

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
TODAY = dt.date(2026, 11, 20)
MANAGEMENT_KEY = "sk-or-v1-progress-" + "0" * 46
ACCOUNT_KEYS = 3


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    # 60 days of activity: the last 30 from /activity, the 30 before from the history import.
    account = generate_account(today=TODAY, keys=ACCOUNT_KEYS, days=60, models=2, seed=7)
    with FakeOpenRouter(today=TODAY) as server:
        server.add_account(MANAGEMENT_KEY, account)
        yield server


@pytest.fixture
def env(sqlite_url: str, keyring: Keyring, master_key: str, fake: FakeOpenRouter) -> dict[str, str]:
    """The command's environment: one registered management key, the fake, the pinned day."""
    engine = create_db_engine(sqlite_url)
    factory = make_session_factory(engine)
    accounts.add_user(factory, "ops@example.com")
    accounts.add_key(factory, keyring, "ops@example.com", "acme", MANAGEMENT_KEY)
    engine.dispose()
    return clean_env(
        OPENROUTER_WATCHER_CONFIG=os.devnull,
        OPENROUTER_WATCHER_DATABASE_URL=sqlite_url,
        OPENROUTER_WATCHER_OPENROUTER_BASE_URL=fake.base_url,
        OPENROUTER_WATCHER_ENCRYPTION_KEY=master_key,
        OPENROUTER_WATCHER_LOGGING_LEVEL="WARNING",
        OPENROUTER_WATCHER_TESTING_CLOCK=noon_iso(TODAY),
    )


def on_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the command with stdout and stderr on one pseudo-terminal; (exit code, output)."""
    controller, terminal = pty.openpty()
    # Wide enough that the line is never shortened to fit.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    proc = subprocess.Popen(
        [CLI, *argv], env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    seen = bytearray()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([controller], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process has closed the terminal
                break
            if not chunk:
                break
            seen.extend(chunk)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    return code, seen.decode().replace("\r\n", "\n")  # the terminal's newline, as written


def summary_figure(output: str, pattern: str) -> int:
    found = re.search(pattern, output)
    assert found is not None, (pattern, output)
    return int(found.group(1).replace(",", ""))


def test_sync_on_a_terminal_shows_one_line_redrawn_then_erased(env: dict[str, str]) -> None:
    code, output = on_terminal(["sync"], env)
    assert code == 0, output
    summary_at = output.index("sync run 1 (")
    progress, summary = output[:summary_at], output[summary_at:]
    # Every draw starts with a carriage return and a clear: the same line, redrawn.
    assert progress.startswith(CLEAR)
    assert progress.endswith(CLEAR)  # erased before the summary
    assert "\n" not in progress and CLEAR not in summary
    draws = [d for d in progress.split(CLEAR) if d]
    assert all(d.startswith("sync: ") for d in draws), draws

    # Each step's first and last state is drawn, with its counts.
    subjects = 1 + ACCOUNT_KEYS  # the history of the account and of each of its keys
    for step, total in (("keys", 1), ("account keys", ACCOUNT_KEYS), ("history", subjects)):
        assert any(d.startswith(f"sync: {step} 0/{total} · ") for d in draws), draws
        assert any(d.startswith(f"sync: {step} {total}/{total} · ") for d in draws), draws
    keys_done = next(d for d in draws if d.startswith("sync: keys 1/1 · "))
    own_rows = summary_figure(summary, r"\nrows: ([\d,]+) inserted")
    assert f" · {own_rows:,} rows · " in keys_done

    # The last draw holds the run's figures, as the summary tells them.
    last = draws[-1]
    rows = (
        own_rows
        + summary_figure(summary, r"account keys: .*; rows: ([\d,]+) inserted")
        + summary_figure(summary, r"history: .*; rows: ([\d,]+) inserted")
    )
    requests = summary_figure(summary, r"requests: ([\d,]+)")
    assert last.startswith(f"sync: history {subjects}/{subjects} · {rows:,} rows · ")
    assert f" · {requests:,} requests · " in last
    assert re.search(r" · \d+:\d\d elapsed · ETA 0:00$", last), last


def test_no_progress_line_with_json_on_a_terminal(env: dict[str, str]) -> None:
    code, output = on_terminal(["sync", "--json"], env)
    assert code == 0, output
    assert output.startswith("{")
    assert "\r" not in output and "\x1b" not in output


def test_piped_there_is_no_line_and_a_backfill_shows_the_history_step(
    env: dict[str, str],
) -> None:
    piped = subprocess.run(
        [CLI, "sync"],
        env={**env, "OPENROUTER_WATCHER_SYNC_HISTORY_DAYS": "0"},  # older days left to fill
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("sync run 1 (")
    assert piped.stderr == ""  # no progress line, and nothing logged at WARNING

    # A backfill of days older than /activity's window: the history step alone.
    code, output = on_terminal(["backfill", "--since", "2026-10-01", "--until", "2026-10-10"], env)
    assert code == 0, output
    progress, _summary = output.split("backfill run 2 (", 1)
    draws = [d for d in progress.split(CLEAR) if d]
    subjects = 1 + ACCOUNT_KEYS
    engine = create_db_engine(env["OPENROUTER_WATCHER_DATABASE_URL"])
    with engine.connect() as conn:  # every row the backfill wrote: the days were empty
        rows = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM usage_stats WHERE source = 'analytics')"
                " + (SELECT count(*) FROM key_usage_stats WHERE source = 'analytics')"
            )
        ).scalar_one()
    engine.dispose()
    assert rows > 0
    assert draws[0].startswith(f"backfill: history 0/{subjects} · 0 rows · ")
    assert draws[-1].startswith(f"backfill: history {subjects}/{subjects} · {rows:,} rows · ")
    assert progress.endswith(CLEAR)
