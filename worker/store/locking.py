"""One at a time per database, across processes and hosts: the sync, the live poll, and the
daemon that leads (:mod:`worker.daemon.leader`); and no write once a lock is lost.

PostgreSQL: a session-level advisory lock held on a connection of its own, which does nothing
else. A heartbeat thread touches that connection every ``heartbeat`` seconds, so it is never
idle long enough for ``idle_session_timeout`` or a NAT to end it. The work itself writes
through ordinary pooled connections; before each transaction it checks, on that connection,
that the lock is still held by the lock's own backend (``pg_locks``): if the lock's connection
died (a server restart, ``pg_terminate_backend``, a timeout shorter than the heartbeat), the
lock died with it, the check fails, and the work stops writing (:class:`LockLostError`). So a
second holder that took the lock meanwhile never has a writer beside it.

SQLite: ``flock`` on a file next to the database; the kernel releases it when the process dies.
Either way taking a lock never waits: a second taker learns at once that it must skip.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from worker.core.errors import DatabaseUnavailableError, WatcherError
from worker.core.logs import get_logger
from worker.store.db import make_session_factory

log = get_logger("worker.locking")

# Any constant 64-bit numbers unique to this application; "orwatch1", "orwatch2", "orwatch3".
ADVISORY_LOCK_ID = 0x6F72776174636831  # the sync's
POLL_LOCK_ID = 0x6F72776174636832  # the live poll's
LEADER_LOCK_ID = 0x6F72776174636833  # the leading daemon's
DEFAULT_HEARTBEAT = 10.0
# pg_locks shows a bigint advisory key as its two halves (and objsubid 1).
_HELD_BY = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = :pid "
    "AND classid = :hi AND objid = :lo AND objsubid = 1 AND granted"
)
_ANY_HOLDER = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND classid = :hi AND objid = :lo AND objsubid = 1 AND granted"
)
_END_HOLDER = text(
    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND pid = :pid "
    "AND classid = :hi AND objid = :lo AND objsubid = 1 AND granted"
)
Fence = Callable[[Connection], None]  # raises LockLostError when a lock is no longer held


def _halves(lock_id: int) -> dict[str, int]:
    return {"hi": lock_id >> 32, "lo": lock_id & 0xFFFFFFFF}


class LockLostError(WatcherError):
    """The sync lock was lost (the database connection holding it closed): this run stopped
    writing; the next sync starts over."""

    @classmethod
    def of(cls, what: str) -> LockLostError:
        return cls(
            f"The {what} lock was lost (the database connection holding it closed): this run "
            f"stopped writing; the next {what} starts over."
        )


def lock_file_for(engine: Engine, suffix: str = ".sync.lock") -> Path | None:
    """The SQLite lock file for this engine's database, or None (in-memory database)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).with_name(Path(database).name + suffix)


class HeldLock:
    """An advisory lock held on a dedicated PostgreSQL connection, touched every ``heartbeat``
    seconds (``beat``, given the connection, may do something useful with it; by default a
    ``SELECT 1``). :meth:`fence` checks from any connection that it still holds."""

    def __init__(
        self,
        engine: Engine,
        lock_id: int,
        *,
        heartbeat: float = DEFAULT_HEARTBEAT,
        beat: Callable[[Connection], None] | None = None,
        what: str = "sync",
    ) -> None:
        self.engine = engine
        self.lock_id = lock_id
        self.what = what  # for the error: the sync, the poll
        self.heartbeat = heartbeat
        self._beat = beat
        self._conn: Connection | None = None
        self.backend_pid: int | None = None
        self.lost = threading.Event()  # the heartbeat found the connection or the lock gone
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock now, or learn that another holds it (False). Never waits."""
        conn = self.engine.connect()
        try:
            taken = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:id)"), {"id": self.lock_id}
                ).scalar()
            )
            if taken:
                self.backend_pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            conn.commit()
        except BaseException:
            with suppress(DBAPIError, DatabaseUnavailableError):
                conn.close()
            raise
        if not taken:
            with suppress(DBAPIError, DatabaseUnavailableError):
                conn.close()
            return False
        self._conn = conn
        self._thread = threading.Thread(
            target=self._keep_alive, name=f"lock-{self.lock_id & 0xFF:02x}", daemon=True
        )
        self._thread.start()
        return True

    def _keep_alive(self) -> None:
        conn = self._conn
        assert conn is not None
        while not self._stop.wait(self.heartbeat):
            try:
                if self._beat is not None:
                    self._beat(conn)
                else:
                    conn.execute(text("SELECT 1"))
                conn.commit()
            except Exception as exc:  # the connection (and the lock with it) is gone
                log.warning("lock_heartbeat_failed", lock=hex(self.lock_id), error=str(exc))
                self.lost.set()
                return

    def held(self, conn: Connection) -> bool:
        """Whether the lock is still this holder's, as ``conn`` sees ``pg_locks``."""
        if self.lost.is_set() or self.backend_pid is None:
            return False
        found = conn.execute(_HELD_BY, {"pid": self.backend_pid, **_halves(self.lock_id)})
        return bool(found.scalar())

    def fence(self, conn: Connection) -> None:
        """Before a transaction's first statement: stop with :class:`LockLostError` unless the
        lock is still held."""
        try:
            held = self.held(conn)
        except (DBAPIError, DatabaseUnavailableError) as exc:
            raise LockLostError.of(self.what) from exc
        if not held:
            raise LockLostError.of(self.what)

    def release(self) -> None:
        """Stop the heartbeat, then release the lock and close its connection (a dead
        connection took the lock with it: nothing to release then)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat + 5)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with suppress(DBAPIError, DatabaseUnavailableError):
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": self.lock_id})
            conn.commit()
        with suppress(DBAPIError, DatabaseUnavailableError):
            conn.close()


def fenced(engine: Engine, fences: Sequence[Fence]) -> sessionmaker[Session]:
    """A session factory whose every transaction first passes ``fences``."""
    factory = make_session_factory(engine)
    if fences:

        def check(_session: Session, _transaction: SessionTransaction, conn: Connection) -> Any:
            for fence in fences:
                fence(conn)

        event.listen(factory, "after_begin", check)
    return factory


@contextmanager
def sync_lock(
    engine: Engine, *, heartbeat: float = DEFAULT_HEARTBEAT, fences: Sequence[Fence] = ()
) -> Iterator[sessionmaker[Session] | None]:
    """Try to take the database's sync lock. Never blocks.

    Yields None when another sync holds it; otherwise the session factory the run must use
    for every transaction (checking, before each, the lock and ``fences``: see above).
    """
    with _try_lock(engine, ADVISORY_LOCK_ID, "sync", heartbeat, fences) as factory:
        yield factory


@contextmanager
def poll_lock(
    engine: Engine, *, heartbeat: float = DEFAULT_HEARTBEAT, fences: Sequence[Fence] = ()
) -> Iterator[sessionmaker[Session] | None]:
    """Try to take the database's poll lock (the live poll's, not the sync's). Never blocks."""
    with _try_lock(engine, POLL_LOCK_ID, "poll", heartbeat, fences) as factory:
        yield factory


@contextmanager
def _try_lock(
    engine: Engine, lock_id: int, what: str, heartbeat: float, fences: Sequence[Fence]
) -> Iterator[sessionmaker[Session] | None]:
    if engine.dialect.name == "postgresql":
        held = HeldLock(engine, lock_id, heartbeat=heartbeat, what=what)
        if not held.acquire():
            yield None
            return
        try:
            yield fenced(engine, [held.fence, *fences])
        finally:
            held.release()
        return
    with file_lock(engine, f".{what}.lock") as taken:
        yield fenced(engine, fences) if taken else None


@contextmanager
def file_lock(engine: Engine, suffix: str) -> Iterator[bool]:
    """SQLite: ``flock`` on ``<database><suffix>``, never waiting; True while it is held (and
    for an in-memory database, which no other process can open)."""
    path = lock_file_for(engine, suffix)
    if path is None:
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def end_holder(engine: Engine, lock_id: int, pid: int) -> bool:
    """PostgreSQL: end the session ``pid`` if it holds ``lock_id`` (a holder gone silent), so
    the lock is free once that session exits; whether it was ended."""
    with engine.begin() as conn:
        ended = conn.execute(_END_HOLDER, {"pid": pid, **_halves(lock_id)}).scalars().all()
    return bool(ended)


def lock_is_held(engine: Engine, lock_id: int = ADVISORY_LOCK_ID) -> bool:
    """Whether some process holds the sync lock (or ``lock_id``) right now (for ``status``)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return bool(conn.execute(_ANY_HOLDER, _halves(lock_id)).scalar())
    suffix = {ADVISORY_LOCK_ID: ".sync.lock", POLL_LOCK_ID: ".poll.lock"}.get(
        lock_id, ".leader.lock"
    )
    path = lock_file_for(engine, suffix)
    if path is None or not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
