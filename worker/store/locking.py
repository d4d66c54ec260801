"""One sync at a time per database, across processes, and no write once the lock is lost.

The live poll (:mod:`worker.live`) takes a lock of its own by the same means
(:func:`poll_lock`): polls never overlap each other, and never wait for a sync.

PostgreSQL: a session-level advisory lock, and every write of the run goes through the very
connection that holds it. Before each transaction the run checks, on that connection, that the
lock is still its own: if the connection died (a server restart, ``idle_session_timeout``) the
lock died with it, the check fails, and the run stops writing (:class:`LockLostError`). It can
neither write on a dead connection nor on a new one SQLAlchemy might open in its place, so a
second sync that took the lock meanwhile never has a writer beside it.

SQLite: ``flock`` on a file next to the database; the kernel releases it when the process dies.
Either way :func:`sync_lock` never waits: a second sync learns at once that it must skip.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from worker.core.errors import DatabaseUnavailableError, WatcherError
from worker.store.db import make_session_factory

# Any constant 64-bit number unique to this application; "orwatch1" in ASCII.
ADVISORY_LOCK_ID = 0x6F72776174636831
POLL_LOCK_ID = 0x6F72776174636832  # "orwatch2": the live poll's
# pg_locks shows a bigint advisory key as its two halves (and objsubid 1).
_HELD = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
    "AND classid = :hi AND objid = :lo AND objsubid = 1 AND granted"
)
_ANY_HOLDER = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND classid = :hi AND objid = :lo AND objsubid = 1 AND granted"
)


def _halves(lock_id: int) -> dict[str, int]:
    return {"hi": lock_id >> 32, "lo": lock_id & 0xFFFFFFFF}


_HALVES = _halves(ADVISORY_LOCK_ID)


class LockLostError(WatcherError):
    """The sync lock was lost (the database connection holding it closed): this run stopped
    writing; the next sync starts over."""


def lock_file_for(engine: Engine, suffix: str = ".sync.lock") -> Path | None:
    """The SQLite lock file for this engine's database, or None (in-memory database)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).with_name(Path(database).name + suffix)


@contextmanager
def sync_lock(engine: Engine) -> Iterator[sessionmaker[Session] | None]:
    """Try to take the database's sync lock. Never blocks.

    Yields None when another sync holds it; otherwise the session factory the run must use
    for every transaction (on PostgreSQL bound to the lock's connection, see above).
    """
    with _try_lock(engine, ADVISORY_LOCK_ID, ".sync.lock") as factory:
        yield factory


@contextmanager
def poll_lock(engine: Engine) -> Iterator[sessionmaker[Session] | None]:
    """Try to take the database's poll lock (the live poll's, not the sync's). Never blocks."""
    with _try_lock(engine, POLL_LOCK_ID, ".poll.lock") as factory:
        yield factory


@contextmanager
def _try_lock(engine: Engine, lock_id: int, suffix: str) -> Iterator[sessionmaker[Session] | None]:
    if engine.dialect.name == "postgresql":
        with _postgres_lock(engine, lock_id) as factory:
            yield factory
        return
    path = lock_file_for(engine, suffix)
    if path is None:
        yield make_session_factory(engine)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            yield make_session_factory(engine)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _postgres_lock(engine: Engine, lock_id: int) -> Iterator[sessionmaker[Session] | None]:
    conn = engine.connect()
    try:
        acquired = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}).scalar()
        )
        conn.commit()
        if not acquired:
            yield None
            return
        factory = sessionmaker(bind=conn, expire_on_commit=False)
        event.listen(factory, "after_begin", _check_still_held(_halves(lock_id)))
        try:
            yield factory
        finally:
            # A dead connection took the lock with it: nothing to release then.
            with suppress(DBAPIError, DatabaseUnavailableError):
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                conn.commit()
    finally:
        with suppress(DBAPIError, DatabaseUnavailableError):
            conn.close()


def _check_still_held(halves: dict[str, int]) -> Any:
    def check(_session: Session, _transaction: SessionTransaction, connection: Connection) -> Any:
        """Before any statement of a transaction: is the lock still held by this connection?"""
        try:
            held = connection.execute(_HELD, halves).scalar()
        except (DBAPIError, DatabaseUnavailableError) as exc:
            raise LockLostError() from exc
        if not held:
            raise LockLostError()

    return check


def lock_is_held(engine: Engine) -> bool:
    """Whether some process holds the sync lock right now (for ``status``)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return bool(conn.execute(_ANY_HOLDER, _HALVES).scalar())
    path = lock_file_for(engine)
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
