"""A worker process killed (SIGKILL) or asked to stop (SIGTERM) in the middle of a sync: every
key is stored whole or not at all, the ledger and `status` say what happened, and the next sync
makes everything exact."""

from __future__ import annotations

import itertools
import signal
import threading
from collections.abc import Callable

import pytest

from tests.faults.conftest import World, wait_until
from worker.locking import lock_is_held


def test_kill_9_mid_sync_leaves_every_key_whole_or_absent_and_the_next_sync_exact(
    db_url: str, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = 8
    world = make_world(db_url, keys=keys, models=10)  # 300 rows per key, from 600 endpoint rows
    released = threading.Event()
    arrived = itertools.count(1)

    def hold_the_last_keys(_path: str, _query: dict[str, str]) -> None:
        # From the sixth key on, answers wait for the kill: the run cannot end before it.
        if next(arrived) >= 6:
            released.wait(timeout=20)

    world.fake.on_request = hold_the_last_keys
    sync = world.spawn("sync", OPENROUTER_WATCHER_SYNC_CONCURRENCY="2")
    try:
        wait_until(lambda: sync.alive() and world.keys_stored() >= 3, what="3 keys stored")
        sync.proc.kill()
        assert sync.proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        released.set()
        world.fake.on_request = None

    whole = world.whole()  # fails on a key stored in part
    assert 3 <= len(whole) < keys
    assert world.runs() == [("sync", "running")]  # it never recorded its end
    wait_until(lambda: not lock_is_held(world.engine), what="the lock released")
    status = world.command(monkeypatch, "status")
    assert status.code == 1
    assert "is still marked running but no sync is running: it was cut short" in status.out

    again = world.command(monkeypatch, "sync")

    assert again.code == 0, again.err
    assert world.whole() == list(range(keys))
    assert world.runs() == [("sync", "interrupted"), ("sync", "ok")]
    assert world.command(monkeypatch, "status").code == 0


def test_sigterm_to_the_daemon_mid_sync_finishes_the_key_in_flight_and_starts_no_other(
    sqlite_url: str, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(sqlite_url, keys=4)
    second = threading.Event()
    signalled = threading.Event()
    arrived = itertools.count(1)

    def hold_the_second_key(_path: str, _query: dict[str, str]) -> None:
        if next(arrived) == 2:
            second.set()
            signalled.wait(timeout=20)  # SIGTERM comes while this answer is on its way

    world.fake.on_request = hold_the_second_key
    daemon = world.spawn("run", OPENROUTER_WATCHER_SCHEDULE_SHUTDOWN_GRACE_SECONDS="20")
    try:
        wait_until(lambda: daemon.alive() and second.is_set(), what="the second key asked")
        assert world.whole() == [0]
        daemon.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: '"shutdown_requested"' in daemon.output()[0], what="the signal seen")
    finally:
        signalled.set()
    done = daemon.done(timeout=25)

    assert done.code == 0, done.out[-2000:]
    assert world.whole() == [0, 1]  # the key in flight was written whole; no other started
    assert world.fake.request_count() == 2
    assert world.runs() == [("schedule", "interrupted")]
    assert world.results(1) == {0: ("ok", None), 1: ("ok", None)}
    (heartbeat,) = done.events("sync_heartbeat")
    assert (heartbeat["status"], heartbeat["keys_ok"], heartbeat["keys_skipped"]) == (
        "interrupted",
        2,
        2,
    )
    assert done.events("daemon_stopped")
    assert world.command(monkeypatch, "status").code == 0  # interrupted on purpose: healthy

    again = world.command(monkeypatch, "sync")

    assert again.code == 0, again.err
    assert world.whole() == [0, 1, 2, 3]
    assert world.runs() == [("schedule", "interrupted"), ("sync", "ok")]
