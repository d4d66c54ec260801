"""The fault suite's world: a database with keys, the fake OpenRouter in this process (so a test
can turn its clock or script faults while a worker process syncs), and the worker itself as a
real process (`openrouter-watcher …`) on a pinned clock.

Every wait polls a real condition with a deadline (:func:`wait_until`); nothing sleeps to hope.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, distinct, func, select
from sqlalchemy.orm import Session, sessionmaker

from worker.cli import main
from worker.core import days
from worker.store.db import create_db_engine, make_session_factory
from worker.store.models import ApiKey, SyncKeyResult, SyncRun, UsageStats
from worker.testing import waiting
from worker.testing.activity_data import as_stored, expected_totals, generate_activity
from worker.testing.clock import PinnedClock, noon_iso
from worker.testing.env import clean_env
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.logs import json_events
from worker.testing.usage import stored_usage_of
from worker.vault import accounts
from worker.vault.crypto import Keyring

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
TODAY = dt.date(2026, 11, 26)
NOON = noon_iso(TODAY)  # the worker's clock, unless a test pins another instant

Rows = dict[tuple[dt.date, str], tuple[Any, ...]]


# The fault suite's processes are quick: a hang shows sooner than the 30 s elsewhere.
wait_until = functools.partial(waiting.wait_until, timeout=20.0)


def secret(n: int) -> str:
    return f"sk-or-v1-fault-{n:060d}"


@dataclass
class Done:
    """A finished worker process."""

    code: int
    out: str
    err: str
    seconds: float

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines (stdout or stderr) with this event name."""
        found = json_events(self.out) + json_events(self.err)
        return [e for e in found if e.get("event") == name]


@dataclass
class Running:
    """A worker process started by :meth:`World.spawn`."""

    proc: subprocess.Popen[bytes]
    started: float
    files: Path

    def alive(self) -> bool:
        """True while it runs; fails the test at once (with its output) if it ended."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the worker exited with {self.proc.returncode}: {self.output()}")
        return True

    def output(self) -> tuple[str, str]:
        return (
            Path(f"{self.files}.out").read_text(errors="replace"),
            Path(f"{self.files}.err").read_text(errors="replace"),
        )

    def done(self, timeout: float = 30.0) -> Done:
        """Wait for the end (killed after ``timeout``: the test fails) and read the output."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the worker did not finish within {timeout} s") from None
        return Done(code, *self.output(), time.monotonic() - self.started)

    def stop(self) -> None:
        """Kill it if it still runs (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class World:
    """One database holding ``keys`` keys of one user, the fake OpenRouter serving their
    activity, and the worker's environment pointed at both."""

    def __init__(
        self,
        url: str,
        fake: FakeOpenRouter,
        master_key: str,
        keyring: Keyring,
        tmp: Path,
        keys: int,
        models: int,
        clock: PinnedClock,
    ) -> None:
        self.url = url
        self.fake = fake
        self.clock = clock  # this process's (the tests' `pinned_clock`), for command()
        self.master_key = master_key
        self.tmp = tmp
        self.engine: Engine = create_db_engine(url)
        self.factory: sessionmaker[Session] = make_session_factory(self.engine)
        self.secrets = [secret(n) for n in range(keys)]
        accounts.add_user(self.factory, "ops@example.com")
        self.ids = [
            accounts.add_key(self.factory, keyring, "ops@example.com", f"k{n}", s).id
            for n, s in enumerate(self.secrets)
        ]
        for n, key in enumerate(self.secrets):
            rows = generate_activity(today=TODAY, models=models, endpoints=2, seed=n)
            fake.add_key(key, rows=rows)
        self.env = clean_env(
            OPENROUTER_WATCHER_CONFIG=os.devnull,
            OPENROUTER_WATCHER_DATABASE_URL=url,
            OPENROUTER_WATCHER_OPENROUTER_BASE_URL=fake.base_url,
            OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS="1",
            OPENROUTER_WATCHER_OPENROUTER_BACKOFF_INITIAL="0",
            OPENROUTER_WATCHER_ENCRYPTION_KEY=master_key,
            OPENROUTER_WATCHER_LOGGING_FORMAT="json",
            OPENROUTER_WATCHER_SYNC_CONCURRENCY="1",
            # Any free port: the default 8787 may be taken (make dashboard, another daemon).
            OPENROUTER_WATCHER_HTTP_LISTEN="127.0.0.1:0",
            OPENROUTER_WATCHER_TESTING_CLOCK=NOON,
        )
        self._spawned = 0
        self._running: list[Running] = []

    # -- the worker as a process ---------------------------------------------------------

    def spawn(self, *args: str, stdin: str = "", **env: str) -> Running:
        """Start ``openrouter-watcher ARGS``; its output goes to files read at its end."""
        self._spawned += 1
        name = self.tmp / f"worker-{self._spawned}"
        Path(f"{name}.in").write_text(stdin)
        with (
            open(f"{name}.in", "rb") as given,
            open(f"{name}.out", "wb") as out,
            open(f"{name}.err", "wb") as err,
        ):
            proc = subprocess.Popen(
                [CLI, *args],
                env={**self.env, **env},
                stdin=given,
                stdout=out,
                stderr=err,
                cwd=self.tmp,
            )
        running = Running(proc, time.monotonic(), name)
        self._running.append(running)
        return running

    def run(self, *args: str, stdin: str = "", timeout: float = 30.0, **env: str) -> Done:
        """``openrouter-watcher ARGS`` as a process, to its end."""
        return self.spawn(*args, stdin=stdin, **env).done(timeout)

    def command(
        self, monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "", clock: str = NOON
    ) -> Done:
        """The same command in this process (faster; for the checks around a fault)."""
        for name, value in self.env.items():
            if name.startswith("OPENROUTER_WATCHER_") and name != days.CLOCK_ENV:
                monkeypatch.setenv(name, value)
        self.clock.at(dt.datetime.fromisoformat(clock))
        out, err = io.StringIO(), io.StringIO()
        started = time.monotonic()
        code = main(list(args), stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return Done(code, out.getvalue(), err.getvalue(), time.monotonic() - started)

    # -- what it left behind -------------------------------------------------------------

    def stored(self, n: int) -> Rows:
        return stored_usage_of(self.factory, self.ids[n])

    def expected(self, n: int, today: dt.date = TODAY) -> Rows:
        """What a sync on ``today`` must store for key ``n``: the fake's window, summed."""
        first, last = days.completed_window(today)
        rows = [
            r
            for r in self.fake.rows(self.secrets[n])
            if first <= dt.date.fromisoformat(str(r["date"])[:10]) <= last
        ]
        return as_stored(expected_totals(rows))

    def keys_stored(self) -> int:
        """How many keys have rows (one cheap query, for polling)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count(distinct(UsageStats.api_key_id)))).scalar_one()
            )

    def whole(self) -> list[int]:
        """The keys stored whole; fails the test if any key is partly stored."""
        whole = []
        for n in range(len(self.ids)):
            stored = self.stored(n)
            assert stored in ({}, self.expected(n)), f"key {n} is partly stored"
            if stored:
                whole.append(n)
        return whole

    def runs(self) -> list[tuple[str, str]]:
        with self.factory() as session:
            return [
                (r.trigger, r.status) for r in session.scalars(select(SyncRun).order_by(SyncRun.id))
            ]

    def results(self, run: int) -> dict[int, tuple[str, str | None]]:
        """Key index → (status, reason) recorded for the ``run``-th run (1-based)."""
        with self.factory() as session:
            run_id = session.scalars(select(SyncRun.id).order_by(SyncRun.id)).all()[run - 1]
            rows = session.scalars(select(SyncKeyResult).where(SyncKeyResult.run_id == run_id))
            return {self.ids.index(r.api_key_id): (r.status, r.reason) for r in rows}

    def digests(self) -> list[str | None]:
        with self.factory() as session:
            return list(session.scalars(select(ApiKey.activity_digest).order_by(ApiKey.id)))

    def close(self) -> None:
        for running in self._running:
            running.stop()
        self.engine.dispose()


@pytest.fixture
def pinned_day() -> dt.date:
    """The fault suite's day: the fake's (tests/conftest.py's ``fake``) and the worker's."""
    return TODAY


@pytest.fixture
def make_world(
    fake: FakeOpenRouter,
    master_key: str,
    keyring: Keyring,
    tmp_path: Path,
    pinned_clock: PinnedClock,
) -> Iterator[Callable[..., World]]:
    """make_world(url, keys=N, models=M) → a :class:`World` on that database."""
    worlds: list[World] = []

    def make(url: str, *, keys: int, models: int = 4) -> World:
        world = World(url, fake, master_key, keyring, tmp_path, keys, models, pinned_clock)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()
