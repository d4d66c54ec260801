"""OpenRouter misbehaving under a sync run by a real worker process: an answer that trickles in
forever, an answer that crosses midnight UTC on its way, a redirect to another host. Every other
key is stored, nothing waits past the deadline, and the key never leaves for another host."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import TODAY, World
from worker.testing.fake_openrouter import FakeOpenRouter, Fault, fingerprint


def test_a_trickling_answer_is_cut_off_at_the_deadline_and_the_other_keys_are_stored(
    sqlite_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(sqlite_url, keys=3)
    # One byte every 0.2 s of a body of some 80 kB: every read succeeds, the answer never ends.
    world.fake.fail_forever(world.secrets[1], Fault(status=200, trickle=0.2))
    deadline = 1.5

    done = world.run(
        "sync",
        OPENROUTER_WATCHER_OPENROUTER_REQUEST_DEADLINE=str(deadline),
        OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS="3",  # the deadline covers every attempt
        OPENROUTER_WATCHER_SYNC_CONCURRENCY="2",
    )

    assert done.code == 1
    (finished,) = done.events("sync_finished")
    assert finished["duration_s"] < deadline + 1.0  # the whole run, the trickle included
    assert (
        f"failed: key {world.ids[1]} ('k1', user 1): upstream_unavailable: OpenRouter /activity "
        f"did not finish its answer within {deadline:g} s ([openrouter] request_deadline)"
    ) in done.out
    assert world.whole() == [0, 2]
    assert world.results(1)[1] == ("failed", "upstream_unavailable")


def test_an_answer_crossing_midnight_keeps_the_day_that_left_the_window(
    sqlite_url: str, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(sqlite_url, keys=1)
    fake = world.fake
    assert world.command(monkeypatch, "sync").code == 0  # at noon: 2026-10-27 … 2026-11-25
    oldest = TODAY - dt.timedelta(days=30)
    kept = {pair: v for pair, v in world.stored(0).items() if pair[0] == oldest}
    assert kept
    # OpenRouter's rows for the day about to complete (2026-11-26).
    rows = fake.rows(world.secrets[0])
    fake.set_rows(world.secrets[0], rows + [dict(row, date=TODAY.isoformat()) for row in rows[:6]])
    hold = 3.0  # the worker's clock starts at 23:59:57: past midnight 3 s after it started
    arrivals: list[float] = []

    def midnight(path: str, _query: dict[str, str]) -> None:
        if path != "/activity":  # one per key; other endpoints are not counted
            return
        # The request left before midnight (the run's window ends 2026-11-25). OpenRouter's day
        # turns as it arrives; the answer leaves once the worker's clock has turned too (it
        # started before this request arrived, so 3 s from now it is past 00:00).
        arrivals.append(time.monotonic())
        fake.today = TODAY + dt.timedelta(days=1)
        time.sleep(hold)  # a bound, not a hope: see above

    fake.on_request = midnight
    done = world.run("sync", OPENROUTER_WATCHER_TESTING_CLOCK="2026-11-26T23:59:57Z")

    assert done.code == 0, done.err
    assert len(arrivals) == 1
    assert "sync run 2 (2026-10-27 … 2026-11-25, 30 days): ok" in done.out  # started before
    stored = world.stored(0)
    assert {pair: v for pair, v in stored.items() if pair[0] == oldest} == kept  # not deleted
    assert stored == {**kept, **world.expected(0, today=TODAY + dt.timedelta(days=1))}
    assert any(day == TODAY for day, _model in stored)  # the day that just completed


def test_a_redirect_to_another_host_is_not_followed_and_the_key_goes_nowhere_else(
    sqlite_url: str, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(sqlite_url, keys=2)
    with FakeOpenRouter(today=TODAY) as elsewhere:
        # Another host (localhost, not 127.0.0.1) that knows the keys: any request that
        # reached it would be recorded with its key's fingerprint.
        for key in world.secrets:
            elsewhere.add_key(key, rows=[])
        there = elsewhere.base_url.replace("127.0.0.1", "localhost")
        world.fake.fail_forever(
            world.secrets[0], Fault(status=302, body="", location=there + "/activity")
        )
        newcomer = "sk-or-v1-fault-redirected-" + "9" * 40
        world.fake.add_key(newcomer)
        world.fake.fail_forever(newcomer, Fault(status=307, body="", location=there + "/key"))
        elsewhere.add_key(newcomer)

        synced = world.run("sync", OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS="3")
        added = world.command(  # the same client, in this process
            monkeypatch, "keys", "add", "--user", "ops@example.com", "--name", "new", stdin=newcomer
        )

        assert elsewhere.requests == []  # no request, so no Authorization header, went there

    assert synced.code == 1
    assert (
        f"failed: key {world.ids[0]} ('k0', user 1): upstream_unavailable: unexpected answer "
        "from OpenRouter /activity (302)"
    ) in synced.out
    assert world.whole() == [1]
    assert (added.code, added.out) == (1, "")
    assert "(307)" in added.err and newcomer not in added.err
    assert len(world.ids) == len(world.digests()) == 2  # the redirected key was not stored
    # The worker asked OpenRouter once for each (a redirect is not retried), with its own key.
    assert [(r.path, r.key_fingerprint) for r in world.fake.requests if r.status in (302, 307)] == [
        ("/api/v1/activity", fingerprint(world.secrets[0])),
        ("/api/v1/key", fingerprint(newcomer)),
    ]
