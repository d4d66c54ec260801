"""The election in one process (:mod:`worker.daemon.leader`): two daemons' sides on one
database, on SQLite (the file lock) and PostgreSQL (the advisory lock on its own connection).
The real-process version, with syncs, polls and kill -9, is tests/faults/test_ha.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import Engine, select, text

from worker.config import HaSettings
from worker.core.days import utc_now
from worker.core.errors import SchemaError
from worker.daemon.leader import Leadership, LeadershipLostError
from worker.store.db import make_session_factory
from worker.store.locking import LEADER_LOCK_ID, HeldLock, fenced
from worker.store.models import Instance, SyncRun
from worker.testing.postgres import PostgresServer
from worker.testing.waiting import wait_until

HA = HaSettings(heartbeat_seconds=0.5, takeover_seconds=2.0)
BOUND = HA.takeover_seconds + HA.heartbeat_seconds
# The advisory lock and its connection are PostgreSQL's (SQLite's file lock has neither).
ONLY_POSTGRES = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


@pytest.fixture
def elect(engine: Engine) -> Iterator[Callable[..., Leadership]]:
    """elect(name, **callbacks) → a started :class:`Leadership`, stopped at the end."""
    started: list[Leadership] = []

    def make(name: str, **callbacks: Callable[..., None]) -> Leadership:
        ha = HaSettings(
            instance_name=name, heartbeat_seconds=HA.heartbeat_seconds,
            takeover_seconds=HA.takeover_seconds,
        )  # fmt: skip
        leadership = Leadership(engine, ha, **callbacks)
        leadership.start()
        started.append(leadership)
        return leadership

    yield make
    for leadership in started:
        leadership.stop()


def roles(engine: Engine) -> dict[str, str]:
    with make_session_factory(engine)() as session:
        return dict(session.execute(select(Instance.name, Instance.role)).all())


def test_the_first_daemon_leads_and_a_second_takes_over_when_it_stops(
    engine: Engine, elect: Callable[..., Leadership]
) -> None:
    elected: list[str] = []
    first = elect("a")
    second = elect("b", on_elected=lambda: elected.append("b"))

    assert first.is_leader and not second.is_leader
    assert roles(engine) == {"a": "leader", "b": "standby"}
    wait_until(lambda: second.role().leader == "a", timeout=5, what="b sees a lead")
    # A standby's fence refuses every transaction: it never writes the scheduled work's rows.
    with pytest.raises(LeadershipLostError), engine.connect() as conn:
        second.fence(conn)

    first.stop()
    stopped = time.monotonic()
    wait_until(lambda: second.is_leader, timeout=BOUND + 2, what="b takes over")

    assert time.monotonic() - stopped <= BOUND + 1
    wait_until(lambda: elected, timeout=5, what="b's due work")
    assert elected == ["b"]  # a takeover, not a start: the due work is run
    assert roles(engine) == {"a": "stopped", "b": "leader"}
    assert second.role().role == "leader"


@ONLY_POSTGRES
def test_a_transaction_after_the_leader_lock_connection_is_ended_is_refused(
    postgres_url: str, engine: Engine, elect: Callable[..., Leadership]
) -> None:
    lost: list[str] = []
    first = elect("a", on_lost=lambda: lost.append("a"))
    second = elect("b")
    factory = fenced(engine, [first.fence])
    with factory.begin() as session:  # the leader writes
        session.add(SyncRun(trigger="schedule", status="ok", started_at=utc_now()))
    lock = first._lock
    assert lock is not None and lock.backend_pid is not None

    with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql")) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (lock.backend_pid,))

    # At once, before any heartbeat noticed: the fence asks pg_locks, and the lock is gone.
    with pytest.raises(LeadershipLostError), factory.begin() as session:
        session.add(SyncRun(trigger="schedule", status="ok", started_at=utc_now()))
    wait_until(lambda: lost, timeout=5, what="a steps down")
    wait_until(lambda: first.is_leader or second.is_leader, timeout=BOUND + 2, what="a leader")
    assert lost == ["a"]  # and then a or b leads again
    assert [first.is_leader, second.is_leader].count(True) == 1  # one leader, never two
    with make_session_factory(engine)() as session:
        assert len(session.scalars(select(SyncRun)).all()) == 1  # the refused one left nothing


@ONLY_POSTGRES
def test_a_silent_leader_is_taken_over_after_takeover_seconds(
    postgres_url: str, engine: Engine, elect: Callable[..., Leadership]
) -> None:
    # A frozen daemon: it holds the lock on a connection the server keeps open, and beats no
    # more. Here a lock taken by hand, recorded as the leader's, with no heartbeat thread.
    frozen = HeldLock(engine, LEADER_LOCK_ID, heartbeat=3600, what="leader")
    assert frozen.acquire()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO instances (name, host, pid, version, revision, role, started_at, "
                "role_since, heartbeat_at, backend_pid) VALUES ('frozen', 'h', 1, 'v', 'r', "
                "'leader', now(), now(), now(), :pid)"
            ),
            {"pid": frozen.backend_pid},
        )
    started = time.monotonic()
    standby = elect("b")
    assert not standby.is_leader  # the lock is held

    wait_until(lambda: standby.is_leader, timeout=BOUND + 3, what="b takes over")

    waited = time.monotonic() - started
    assert HA.takeover_seconds <= waited <= BOUND + 2
    with engine.connect() as conn:
        assert not frozen.held(conn)  # its connection was ended: the frozen one cannot write
    frozen.release()


def test_a_daemon_stops_when_the_database_moves_to_another_revision(
    engine: Engine, elect: Callable[..., Leadership]
) -> None:
    changed: list[SchemaError] = []
    leader = elect("a", on_schema_changed=changed.append)
    (revision,) = engine.connect().execute(text("SELECT version_num FROM alembic_version")).one()
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        wait_until(lambda: changed, timeout=5, what="the revision change noticed")
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    assert "database is at revision 9999" in str(changed[0])
    assert not leader.is_leader


@ONLY_POSTGRES
def test_the_leaders_heartbeat_keeps_its_lock_through_idle_session_timeout(
    pg_server: PostgresServer, postgres_url: str, engine: Engine, elect: Callable[..., Leadership]
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{database}\" SET idle_session_timeout = '1200ms'")
    try:
        engine.dispose()  # new connections get the setting
        leader = elect("a")
        lock = leader._lock
        assert lock is not None
        # Three times the timeout, heard of all along: each heartbeat moves the leader's row.
        wait_until(lambda: _lead_held_for(engine, "a") >= 4, timeout=15, what="4 s of beats")
        assert leader.is_leader and not lock.lost.is_set()
        with engine.connect() as conn:
            assert lock.held(conn)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" RESET idle_session_timeout')


def _lead_held_for(engine: Engine, name: str) -> float:
    """Seconds between ``name``'s start and its last heartbeat, on the database's clock."""
    with make_session_factory(engine)() as session:
        row = session.execute(
            select(Instance.started_at, Instance.heartbeat_at).where(Instance.name == name)
        ).one()
    return (row.heartbeat_at - row.started_at).total_seconds()
