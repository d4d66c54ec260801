"""The sync lock: one holder per database, released when the holder ends or dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sqlalchemy import Engine

from worker.store.db import create_db_engine
from worker.store.locking import sync_lock
from worker.testing.waiting import wait_until


def test_second_taker_is_refused_while_first_holds(engine: Engine, db_url: str) -> None:
    other = create_db_engine(db_url)
    with sync_lock(engine) as first:
        with sync_lock(other) as second:
            assert (first is not None, second) == (True, None)
    with sync_lock(other) as again:
        assert again is not None
    other.dispose()


def test_lock_of_a_killed_process_does_not_outlive_it(engine: Engine, db_url: str) -> None:
    """A holder killed with SIGKILL (no cleanup at all) must not block the next sync."""
    script = textwrap.dedent(f"""
        import sys, time
        from worker.store.db import create_db_engine
        from worker.store.locking import sync_lock
        with sync_lock(create_db_engine({db_url!r})) as held:
            print("held" if held is not None else "refused", flush=True)
            sys.stdin.readline()
    """)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        with sync_lock(engine) as while_alive:
            assert while_alive is None
        proc.kill()
        proc.wait(timeout=10)
        # PostgreSQL ends the dead client's session (and frees its advisory lock) when it reads
        # the closed socket, a moment after the process is gone: poll for it, with a deadline.
        wait_until(lambda: _can_take(engine), timeout=15, what="lock freed after SIGKILL")


def _can_take(engine: Engine) -> bool:
    with sync_lock(engine) as held:
        return held is not None
