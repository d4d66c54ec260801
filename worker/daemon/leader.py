"""Which daemon leads: several ``run`` daemons may share one database; each serves its HTTP
face, only the leader runs the scheduled work (the sync, the live poll and its alerts, the
digest, the guards).

Leadership is one lock (:data:`worker.store.locking.LEADER_LOCK_ID`): on PostgreSQL an advisory
lock held on a connection of its own, whose heartbeat (every ``[ha] heartbeat_seconds``) also
records the leader's in ``instances``; on SQLite ``flock`` on ``<database>.leader.lock`` (two
daemons on one host). Every ``heartbeat_seconds`` each daemon records itself, and a standby
tries to take the lock. A leader not heard from for ``[ha] takeover_seconds`` (a frozen process,
a host gone whose connection the server still thinks open) is taken over on PostgreSQL: the
standby ends the old lock's connection (``pg_terminate_backend``) and takes the lock.

The work's every transaction checks first that this daemon still leads (:meth:`Leadership.
fence`), so a leader that lost its lock (a server restart, a network cut, its connection ended)
stops before its next write, logs ``leadership_lost`` and goes back to standby: it never writes
beside a new leader. A daemon whose code expects another schema revision than the database's
(an upgrade in progress) stops with one line, exit 2.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

import worker
from worker.config import HaSettings
from worker.core.days import utc_now
from worker.core.errors import SchemaError, WatcherError
from worker.core.logs import get_logger
from worker.store import instances
from worker.store.db import HEAD_REVISION, current_revision, make_session_factory, transaction
from worker.store.locking import LEADER_LOCK_ID, HeldLock, LockLostError, end_holder, file_lock

log = get_logger("worker.leader")


class LeadershipLostError(LockLostError):
    """This daemon no longer leads (the connection holding its lock closed): it stopped
    writing; the new leader carries on."""


def instance_name(settings: HaSettings) -> str:
    """``[ha] instance_name``, or the host name and the process id."""
    return settings.instance_name or f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Role:
    """This daemon's role as its HTTP face shows it."""

    instance: str
    role: str  # leader | standby
    since: dt.datetime  # the last change
    leader: str | None  # the leader's name, as the database last said


class Leadership:
    """This daemon's side of the election (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        settings: HaSettings,
        *,
        on_elected: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
        on_schema_changed: Callable[[SchemaError], None] = lambda _error: None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.name = instance_name(settings)
        self.factory = make_session_factory(engine)
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._on_schema_changed = on_schema_changed
        self._postgres = engine.dialect.name == "postgresql"
        self._lock: HeldLock | None = None
        self._file: ExitStack | None = None
        self._id: int | None = None
        self._leads = threading.Event()
        self._stop = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._since = utc_now()
        self.leader_name: str | None = None

    # -- what the rest of the daemon asks --------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leads.is_set()

    def role(self) -> Role:
        return Role(
            self.name, "leader" if self.is_leader else "standby", self._since, self.leader_name
        )

    def fence(self, conn: Connection) -> None:
        """Before a scheduled job's transaction: :class:`LeadershipLostError` unless this daemon
        still leads (on PostgreSQL: its lock's backend still holds the lock, as ``conn`` sees)."""
        lock = self._lock
        if not self.is_leader or (self._postgres and lock is None):
            raise LeadershipLostError()
        if lock is not None:
            try:
                lock.fence(conn)
            except LockLostError as exc:
                raise LeadershipLostError() from exc

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Record this daemon, run the first election now (a lone daemon leads at once), then
        go on every heartbeat in a thread of its own."""
        with transaction(self.factory) as session:
            self._id = instances.register(
                session,
                name=self.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=worker.__version__,
                revision=HEAD_REVISION,
            )
        self._round(first=True)
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop electing, give the lock up (a standby takes it at its next heartbeat) and record
        this daemon stopped. Once: later calls do nothing."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.heartbeat_seconds + 5)
        self._step_down()
        if self._id is not None:
            with suppress(WatcherError, DBAPIError), transaction(self.factory) as session:
                instances.stopped(session, self._id)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self._round()
            except Exception as exc:  # a database outage: the lock went with it, try again
                log.warning("leadership_round_failed", error=f"{type(exc).__name__}: {exc}")
                if self.is_leader and self._lock is not None and self._lock.lost.is_set():
                    self._depose("its lock's connection closed")

    # -- one round ----------------------------------------------------------------------------

    def _round(self, *, first: bool = False) -> None:
        revision = current_revision(self.engine)
        if revision != HEAD_REVISION:
            error = SchemaError(
                f"database is at revision {revision}, this daemon's code expects "
                f"{HEAD_REVISION}: it stops (upgrade its code, or run the matching version)"
            )
            log.error("schema_revision_changed", database=revision, code=HEAD_REVISION)
            self._stop.set()  # no further round: this daemon stops
            self._step_down()
            self._on_schema_changed(error)
            return
        if self.is_leader:
            if self._lock is not None and self._lock.lost.is_set():
                # Its heartbeat found the lock's connection gone (the fence refuses writes
                # already: it asks pg_locks before every transaction).
                self._depose("its lock's connection closed")
            elif self._lock is None:  # SQLite: the file lock holds while the process lives
                self._beat(instances.LEADER)
        if not self.is_leader:
            self._beat(instances.STANDBY)
            if self._take() or self._take_over_a_silent_leader():
                self._elected(first)
        if self.is_leader:
            self.leader_name = self.name

    def _beat(self, role: str) -> None:
        assert self._id is not None
        with transaction(self.factory) as session:
            instances.beat(session, self._id, role)

    def _take(self) -> bool:
        if self._postgres:
            instance_id = self._id
            assert instance_id is not None

            def beat(conn: Connection) -> None:
                # The leader's heartbeat on the lock's own connection: it keeps that
                # connection busy and proves it alive in the same statement.
                instances.beat(conn, instance_id, instances.LEADER, backend_pid=lock.backend_pid)

            lock = HeldLock(
                self.engine,
                LEADER_LOCK_ID,
                heartbeat=self.settings.heartbeat_seconds,
                beat=beat,
                what="leader",
            )
            if not lock.acquire():
                return False
            try:
                with self.engine.begin() as conn:
                    beat(conn)
            except BaseException:
                lock.release()  # never a lock held by a daemon that does not know it leads
                raise
            self._lock = lock
            return True
        stack = ExitStack()
        if not stack.enter_context(file_lock(self.engine, ".leader.lock")):
            stack.close()
            return False
        try:
            self._beat(instances.LEADER)
        except BaseException:
            stack.close()
            raise
        self._file = stack
        return True

    def _elected(self, first: bool) -> None:
        self._since = utc_now()
        self._leads.set()
        log.info("leadership_acquired", instance=self.name, at_start=first)
        if not first:
            self._on_elected()

    def _depose(self, why: str) -> None:
        log.error("leadership_lost", instance=self.name, reason=why)
        self._step_down()
        self._since = utc_now()
        # Say so at once where the database still answers (else at the next round).
        with suppress(WatcherError, DBAPIError):
            self._beat(instances.STANDBY)
        self._on_lost()

    def _step_down(self) -> None:
        self._leads.clear()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
        stack, self._file = self._file, None
        if stack is not None:
            stack.close()

    def _take_over_a_silent_leader(self) -> bool:
        """Note who leads; and if that leader's heartbeat is older than ``takeover_seconds``
        while the server still keeps its lock's connection (a frozen process, a host gone
        without a word; PostgreSQL only): end that connection and take the lock once the
        server has let it go (True)."""
        with self.factory() as session:
            now = instances.db_now(session)
            current = instances.leader(session)
        self.leader_name = current.name if current is not None else None
        if not self._postgres or current is None or current.backend_pid is None:
            return False
        silent = (now - current.heartbeat_at).total_seconds()
        if current.name == self.name or silent < self.settings.takeover_seconds:
            return False
        if not end_holder(self.engine, LEADER_LOCK_ID, current.backend_pid):
            return False
        log.warning("leader_taken_over", leader=current.name, silent_seconds=round(silent, 1))
        # The backend exits a moment after the signal; its lock goes with it.
        deadline = time.monotonic() + min(5.0, self.settings.heartbeat_seconds)
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._take():
                return True
            self._stop.wait(0.05)
        return False
