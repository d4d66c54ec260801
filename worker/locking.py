"""One sync at a time per database, across processes.

PostgreSQL: a session-level advisory lock held on a dedicated connection; the server releases it
when that connection closes, so a crashed process cannot leave it behind. SQLite: ``flock`` on a
file next to the database; the kernel releases it when the process dies, for the same reason.
Either way, :func:`sync_lock` never waits: a second sync learns at once that it must skip.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

# Any constant 64-bit number unique to this application; "orwatch1" in ASCII.
ADVISORY_LOCK_ID = 0x6F72776174636831


def lock_file_for(engine: Engine) -> Path | None:
    """The SQLite lock file for this engine's database, or None (in-memory database)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).with_name(Path(database).name + ".sync.lock")


@contextmanager
def sync_lock(engine: Engine) -> Iterator[bool]:
    """Try to take the database's sync lock; yield whether we hold it. Never blocks."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            acquired = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:id)"), {"id": ADVISORY_LOCK_ID}
                ).scalar()
            )
            conn.commit()
            try:
                yield acquired
            finally:
                if acquired:
                    conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": ADVISORY_LOCK_ID})
                    conn.commit()
        return

    path = lock_file_for(engine)
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
