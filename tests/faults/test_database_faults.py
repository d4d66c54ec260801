"""The database failing under a sync run by a real worker process: SQLite locked by another
process, PostgreSQL restarted mid-sync, and PostgreSQL ending the idle connection that holds the
sync lock (``idle_session_timeout``). Nothing is half written, nothing hangs, the run says it
stopped, and the next sync makes everything exact."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.faults.conftest import World, wait_until
from worker.store.db import create_db_engine, init_db
from worker.testing.postgres import PostgresServer, find_bindir

# Another process holding SQLite's write lock until its stdin closes.
HOLDER = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN IMMEDIATE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def hold_write_lock(url: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url.removeprefix("sqlite:///")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def release(holder: subprocess.Popen[str]) -> None:
    holder.communicate(timeout=10)  # closes its stdin: it rolls back and exits


def test_sqlite_locked_by_another_process_mid_sync_fails_the_later_keys_without_a_hang(
    sqlite_url: str, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(sqlite_url, keys=2)
    busy = {"OPENROUTER_WATCHER_DATABASE_BUSY_TIMEOUT_MS": "200"}

    # Another process takes the write lock while the second key's answer is on its way, and
    # keeps it until the run has ended.
    holders: list[subprocess.Popen[str]] = []
    arrived = itertools.count(1)

    def lock_after_the_first_key(path: str, _query: dict[str, str]) -> None:
        if path != "/activity":  # one per key; other endpoints are not counted
            return
        if next(arrived) == 2:
            wait_until(lambda: world.keys_stored() == 1, what="the first key stored")
            holders.append(hold_write_lock(sqlite_url))
            locked_at.append(time.monotonic())

    locked_at: list[float] = []
    world.fake.on_request = lock_after_the_first_key
    try:
        during = world.run("sync", **busy)
        ended = time.monotonic()
    finally:
        for holder in holders:
            release(holder)

    assert during.code == 1
    # The second key's write waited busy_timeout_ms, alone and retried, then gave up (so did
    # recording its failure and the run's end): no hang. Counted from the lock, not from the
    # process's start, which a loaded machine can make slow.
    assert ended - locked_at[0] < 10
    # The run stopped writing there (what was left waits for the next run), and says why.
    assert "sync run 1 (2026-10-27 … 2026-11-25, 30 days): interrupted" in during.out
    assert "stopped: the database sqlite:///" in during.out
    assert (
        f"failed: key {world.ids[1]} ('k1', user 1): database_busy: the database sqlite:///"
    ) in during.out
    assert world.whole() == [0]
    # Its end could not be recorded either: the run stays "running", and with no process
    # holding the sync lock `status` calls it cut short.
    assert world.runs()[-1] == ("sync", "running")
    status = world.command(monkeypatch, "status")
    assert status.code == 1 and "it was cut short" in status.out

    after = world.command(monkeypatch, "sync")

    assert after.code == 0, after.err
    assert world.whole() == [0, 1]
    assert world.runs() == [("sync", "interrupted"), ("sync", "ok")]


# --- PostgreSQL: a server of our own, restarted and reconfigured by the tests ---------------


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this module alone (the session's shared one is never
    restarted), with a migrated template database."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (initdb, postgres) found: set PG_BINDIR")
    server = PostgresServer(bindir).start()
    try:
        engine = create_db_engine(server.create_database("template_head"))
        init_db(engine)
        engine.dispose()
        yield server
    finally:
        server.stop()


_databases = itertools.count()


@pytest.fixture
def own_pg_url(own_pg: PostgresServer) -> str:
    return own_pg.create_database(f"f{next(_databases)}", template="template_head")


def test_postgres_restarted_mid_sync_stops_the_run_and_the_next_sync_is_exact(
    own_pg: PostgresServer,
    own_pg_url: str,
    make_world: Callable[..., World],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = make_world(own_pg_url, keys=3)
    arrived = itertools.count(1)
    restarted = threading.Event()

    def restart_after_the_first_key(path: str, _query: dict[str, str]) -> None:
        if path != "/activity":  # one per key; other endpoints are not counted
            return
        if next(arrived) == 2:
            wait_until(lambda: world.keys_stored() == 1, what="the first key stored")
            own_pg.restart()  # the lock's connection dies with the old server
            restarted.set()

    world.fake.on_request = restart_after_the_first_key
    done = world.run("sync")

    assert restarted.is_set()
    assert done.code == 1
    stopped = [line for line in done.out.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1 and "lock was lost" in stopped[0]
    assert "keys: 1 ok, 0 failed, 2 not started" in done.out
    assert world.whole() == [0]
    assert world.runs() == [("sync", "interrupted")]
    assert world.results(1) == {0: ("ok", None)}
    assert world.command(monkeypatch, "status").code == 0  # stopped and recorded: healthy

    again = world.command(monkeypatch, "sync")

    assert again.code == 0, again.err
    assert world.whole() == [0, 1, 2]
    assert world.runs() == [("sync", "interrupted"), ("sync", "ok")]


def test_idle_session_timeout_ending_the_lock_connection_stops_the_run(
    own_pg: PostgresServer,
    own_pg_url: str,
    make_world: Callable[..., World],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = make_world(own_pg_url, keys=1)
    database = own_pg_url.rsplit("/", 1)[1]
    with psycopg.connect(own_pg.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{database}\" SET idle_session_timeout = '300ms'")
    world.fake.latency = 0.8  # the lock's connection idles longer than that for the answer

    done = world.run("sync")

    assert done.code == 1
    stopped = [line for line in done.out.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1 and "lock was lost" in stopped[0]
    assert "keys: 0 ok, 0 failed, 1 not started" in done.out
    assert world.whole() == []
    assert world.runs() == [("sync", "interrupted")]
    assert world.results(1) == {}  # the key's write never began

    with psycopg.connect(own_pg.dsn(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" RESET idle_session_timeout')
    world.fake.latency = 0.0
    again = world.command(monkeypatch, "sync")
    assert again.code == 0, again.err
    assert world.whole() == [0]
