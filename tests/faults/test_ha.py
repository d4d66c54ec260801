"""Two daemons, one database (docs/operations.md, "Running more than one"): real
``openrouter-watcher run`` processes on one database and the fake OpenRouter, with alert rules
and a digest delivered to a real webhook receiver.

- only the leader syncs and polls; ``kill -9`` of the leader mid-sync: the standby takes over
  within ``[ha] takeover_seconds`` plus one heartbeat, completes the interrupted sync (the
  ledger shows both runs), and the data equals the source; every alert reached the receiver
  once (SQLite: two daemons on one host; PostgreSQL);
- the leader's lock connection ended with ``pg_terminate_backend`` in the middle of its poll:
  that poll stops before its next write, one leader after, nothing sent twice;
- PostgreSQL restarted under two daemons: both live on, one leads again, nothing twice;
- ``idle_session_timeout`` shorter than a sync, longer than the heartbeat: the sync holds
  (a short run here; the issue's 5 s / 2 s / 30 s one is ``make test-long``);
- the schema moved to another revision under a running daemon (another host's upgrade): it
  stops with one line, exit 2.

Each daemon beats every 0.5 s and takes over after 2 s, polls every second.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text

from tests.faults.conftest import Running, World, wait_until
from worker.store import instances
from worker.store.db import HEAD_REVISION, create_db_engine, init_db
from worker.store.models import Instance, SyncRun
from worker.testing.logs import json_events
from worker.testing.postgres import PostgresServer, find_bindir
from worker.testing.receivers import WebhookReceiver

HEARTBEAT, TAKEOVER = 0.5, 2.0
BOUND = TAKEOVER + HEARTBEAT
KEYS = 3
# Two thresholds per key and one digest: each must reach the receiver once, in total.
MESSAGES = KEYS * 2 + 1
CONFIG = """
[live]
interval_seconds = 1

[ha]
heartbeat_seconds = {heartbeat}
takeover_seconds = {takeover}

[[channels]]
name = "ops"
url = "{hook}"

[digest]
channels = ["ops"]
at = "00:30"

[[alerts]]
name = "credit"
metric = "balance"
below = [999000, 998000]
per = "account"
notify = ["ops"]
"""


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


class Pair:
    """Daemons named a, b, … of one :class:`World`, with one configuration file."""

    def __init__(self, world: World, hook: WebhookReceiver, tmp: Path, **ha: float) -> None:
        self.world = world
        self.hook = hook
        self.config = tmp / "ha.toml"
        self.config.write_text(
            CONFIG.format(
                hook=hook.url("/hook"),
                heartbeat=ha.get("heartbeat", HEARTBEAT),
                takeover=ha.get("takeover", TAKEOVER),
            )
        )
        self.daemons: dict[str, Running] = {}

    def start(self, name: str) -> Running:
        daemon = self.world.spawn(
            "run",
            OPENROUTER_WATCHER_CONFIG=str(self.config),
            OPENROUTER_WATCHER_HA_INSTANCE_NAME=name,
            PYTHONUNBUFFERED="1",  # each log line in the file as it is written
        )
        self.daemons[name] = daemon
        return daemon

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        out, err = self.daemons[name].output()
        return [e for e in json_events(out) + json_events(err) if e.get("event") == event]

    def role(self, name: str) -> str | None:
        with self.world.factory() as session:
            return session.scalar(select(Instance.role).where(Instance.name == name))

    def backend(self, name: str) -> int:
        with self.world.factory() as session:
            pid = session.scalar(select(Instance.backend_pid).where(Instance.name == name))
        assert pid is not None
        return pid

    def runs(self) -> list[tuple[str, str, str | None]]:
        with self.world.factory() as session:
            rows = session.execute(
                select(SyncRun.trigger, SyncRun.status, SyncRun.instance).order_by(SyncRun.id)
            )
            return [(t, s, i) for t, s, i in rows]

    def titles(self) -> list[str]:
        return [str(m["json"]["title"]) for m in self.hook.received]

    def one_leader_since(self, after: dt.datetime) -> str | None:
        """The leader, once both daemons have beaten since ``after`` (the database's clock)
        and exactly one of them leads; else None."""
        with self.world.factory() as session:
            rows = session.execute(select(Instance.name, Instance.role, Instance.heartbeat_at))
            fresh = {name: role for name, role, at in rows if at > after}
        if sorted(fresh.values()) != ["leader", "standby"]:
            return None
        return next(name for name, role in fresh.items() if role == "leader")

    def db_now(self) -> dt.datetime:
        with self.world.factory() as session:
            return instances.db_now(session)

    def polls_by(self, name: str) -> int:
        return len(self.events(name, "poll_finished"))

    def settle(self, name: str) -> None:
        """Every message arrived, and one more poll of ``name`` sent nothing more."""
        self.hook.wait_for(MESSAGES, timeout=30)
        seen = self.polls_by(name)
        wait_until(lambda: self.polls_by(name) > seen, what=f"one more poll by {name}")
        titles = self.titles()
        assert len(titles) == MESSAGES and len(set(titles)) == MESSAGES, titles


def _only_the_leader_worked(pair: Pair, standby: str) -> None:
    """``standby`` skipped every job until it led, and did none."""
    out, err = pair.daemons[standby].output()
    events = [e["event"] for e in json_events(out) + json_events(err)]
    elected = events.index("leadership_acquired")
    assert "poll_skipped" in events[:elected] and "sync_skipped" in events[:elected]
    for work in ("sync_started", "poll_finished", "alert_delivered"):
        assert work not in events[:elected], work


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_the_standby_takes_over_a_leader_killed_mid_sync_and_nothing_is_sent_twice(
    db_url: str, make_world: Callable[..., World], hook: WebhookReceiver, tmp_path: Path
) -> None:
    world = make_world(db_url, keys=KEYS)
    pair = Pair(world, hook, tmp_path)
    activity = itertools.count(1)
    killed: list[float] = []

    def kill_the_leader_at_the_second_key(path: str, _query: dict[str, str]) -> None:
        if path == "/activity" and next(activity) == 2:
            wait_until(lambda: pair.role("b") == "standby", what="b waits as standby")
            os.kill(pair.daemons["a"].proc.pid, signal.SIGKILL)
            killed.append(time.monotonic())

    world.fake.on_request = kill_the_leader_at_the_second_key
    pair.start("a")
    wait_until(lambda: pair.role("a") == "leader", what="a leads")
    pair.start("b")
    wait_until(lambda: killed, what="a killed mid-sync")
    assert pair.daemons["a"].proc.wait(timeout=10) == -signal.SIGKILL

    wait_until(lambda: pair.role("b") == "leader", timeout=BOUND + 1.5, what="b takes over")
    took = time.monotonic() - killed[0]
    print(f"takeover after kill -9 ({world.engine.dialect.name}): {took:.2f} s")
    wait_until(lambda: len(pair.runs()) == 2 and pair.runs()[1][1] == "ok", what="b's sync")

    # The interrupted run and its successor; the data equals the source to the last digit.
    assert pair.runs() == [("schedule", "interrupted", "a"), ("schedule", "ok", "b")]
    assert world.whole() == list(range(KEYS))
    pair.settle("b")
    _only_the_leader_worked(pair, "b")
    assert pair.daemons["b"].alive()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_leader_whose_lock_connection_is_ended_mid_poll_stops_writing_and_hands_over(
    db_url: str, make_world: Callable[..., World], hook: WebhookReceiver, tmp_path: Path
) -> None:
    world = make_world(db_url, keys=KEYS)
    pair = Pair(world, hook, tmp_path)
    pair.start("a")
    wait_until(lambda: pair.role("a") == "leader", what="a leads")
    wait_until(lambda: pair.runs() == [("schedule", "ok", "a")], what="a's first sync")
    hook.wait_for(MESSAGES, timeout=30)
    pair.start("b")
    wait_until(lambda: pair.role("b") == "standby", what="b waits as standby")
    ended: list[int] = []
    ending = threading.Lock()

    def end_the_lock_connection_mid_poll(path: str, _query: dict[str, str]) -> None:
        with ending:
            if path == "/credits" and not ended:
                pid = pair.backend("a")
                with psycopg.connect(world.url.replace("+psycopg", ""), autocommit=True) as c:
                    c.execute("SELECT pg_terminate_backend(%s)", (pid,))
                ended.append(pid)

    world.fake.on_request = end_the_lock_connection_mid_poll
    wait_until(lambda: ended, what="a's lock connection ended during its poll")
    world.fake.on_request = None

    # That poll stops before its next write; a steps down within a heartbeat.
    wait_until(lambda: pair.events("a", "poll_stopped"), what="a's poll stopped")
    wait_until(lambda: pair.events("a", "leadership_lost"), what="a steps down")
    after = pair.db_now()
    wait_until(lambda: pair.one_leader_since(after), timeout=BOUND + 2, what="one leader")
    leader = pair.one_leader_since(after)
    assert leader is not None
    pair.settle(leader)
    assert [r for r in pair.runs() if r[1] != "ok"] == []
    assert all(d.alive() for d in pair.daemons.values())


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the restart (the session's shared one is never restarted)."""
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


def test_two_daemons_live_through_a_postgresql_restart_and_one_leads_again(
    own_pg: PostgresServer,
    make_world: Callable[..., World],
    hook: WebhookReceiver,
    tmp_path: Path,
) -> None:
    world = make_world(own_pg.create_database("restart", template="template_head"), keys=KEYS)
    pair = Pair(world, hook, tmp_path)
    pair.start("a")
    wait_until(lambda: pair.role("a") == "leader", what="a leads")
    pair.start("b")
    wait_until(lambda: pair.role("b") == "standby", what="b waits as standby")
    hook.wait_for(MESSAGES, timeout=30)
    world.engine.dispose()

    own_pg.restart()

    after = pair.db_now()
    wait_until(lambda: pair.one_leader_since(after), timeout=30, what="one leader again")
    leader = pair.one_leader_since(after)
    assert leader is not None
    pair.settle(leader)
    assert all(d.alive() for d in pair.daemons.values())
    assert pair.runs()[0] == ("schedule", "ok", "a")


@pytest.mark.parametrize(
    ("timeout", "heartbeat", "sync_seconds"),
    [
        pytest.param("1200ms", 0.5, 3.6, id="short"),
        pytest.param("5s", 2.0, 30.0, id="long", marks=pytest.mark.long),
    ],
)
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_sync_longer_than_idle_session_timeout_holds_its_locks_by_the_heartbeat(
    db_url: str,
    pg_server: PostgresServer,
    make_world: Callable[..., World],
    hook: WebhookReceiver,
    tmp_path: Path,
    timeout: str,
    heartbeat: float,
    sync_seconds: float,
) -> None:
    world = make_world(db_url, keys=KEYS)
    database = db_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{database}\" SET idle_session_timeout = '{timeout}'")
    try:

        def slow_upstream(path: str, _query: dict[str, str]) -> None:
            if path == "/activity":
                time.sleep(sync_seconds / KEYS)  # the fault: an upstream this slow

        world.fake.on_request = slow_upstream
        pair = Pair(world, hook, tmp_path, heartbeat=heartbeat, takeover=heartbeat * 4)
        pair.start("a")
        wait_until(lambda: pair.runs()[-1:] == [("schedule", "ok", "a")] if pair.runs() else False,
                   timeout=sync_seconds + 30, what="the slow sync finished")  # fmt: skip
        started = pair.events("a", "sync_started")[0]["timestamp"]
        finished = pair.events("a", "sync_finished")[0]["timestamp"]
        assert _seconds(started, finished) >= sync_seconds
        assert pair.role("a") == "leader" and not pair.events("a", "leadership_lost")
        assert not pair.events("a", "sync_lock_lost") and not pair.events(
            "a", "lock_heartbeat_failed"
        )
        assert world.whole() == list(range(KEYS))
    finally:
        world.fake.on_request = None
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" RESET idle_session_timeout')


def _seconds(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_daemon_stops_with_exit_2_when_another_upgrades_the_schema_under_it(
    db_url: str, make_world: Callable[..., World], hook: WebhookReceiver, tmp_path: Path
) -> None:
    world = make_world(db_url, keys=1)
    pair = Pair(world, hook, tmp_path)
    daemon = pair.start("a")
    wait_until(lambda: pair.role("a") == "leader", what="a leads")
    with world.engine.begin() as conn:  # what `migrate` of a newer release leaves
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    done = daemon.done(timeout=20)

    assert done.code == 2
    errors = [line for line in done.err.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: database is at revision 9999, this daemon's code expects {HEAD_REVISION}: it "
        "stops (upgrade its code, or run the matching version)"
    ]
    assert "Traceback" not in done.err + done.out
    assert pair.role("a") == "stopped"
