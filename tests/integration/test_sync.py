"""worker.sync.run_sync through the real client against the fake OpenRouter on 127.0.0.1, on
SQLite and PostgreSQL: the production path end to end, HTTP, validation and SQL included."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, delete, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import UsageTriggers
from worker.config import Settings
from worker.core.errors import NotFoundError, UsageError
from worker.core.usage import WriteCounts
from worker.store.db import transaction
from worker.store.models import ApiKey, SyncKeyResult, SyncRun, UsageStats, User
from worker.sync.run import run_sync
from worker.sync.summary import RunSummary
from worker.testing.clock import PinnedClock, noon
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.testing.usage import stored_usage_of
from worker.vault.crypto import Keyring

TODAY = dt.date(2026, 11, 26)
D0 = dt.date(2026, 11, 20)
D1 = dt.date(2026, 11, 24)
D2 = dt.date(2026, 11, 25)
SECRET_A = "sk-or-v1-" + "a" * 64
SECRET_B = "sk-or-v1-" + "b" * 64
SECRET_C = "sk-or-v1-" + "c" * 64
SECRET_D = "sk-or-v1-" + "d" * 64


def item(
    day: dt.date,
    model: str,
    *,
    endpoint: str = "e1",
    requests: int = 1,
    prompt: int = 0,
    completion: int = 0,
    reasoning: int = 0,
    usage: str = "0",
    byok: str = "0",
) -> dict[str, Any]:
    """One raw ``ActivityItem`` as OpenRouter sends it."""
    return {
        "date": day.isoformat(),
        "model": model,
        "model_permaslug": model + "-2025",
        "endpoint_id": endpoint,
        "provider_name": "P",
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "reasoning_tokens": reasoning,
        "usage": Decimal(usage),
        "byok_usage_inference": Decimal(byok),
    }


pytestmark = pytest.mark.usefixtures("pinned_clock")


@pytest.fixture
def pinned_day() -> dt.date:
    """The worker's clock at noon UTC on TODAY (the fake's window ends before TODAY too)."""
    return TODAY


@pytest.fixture
def user(session: Session) -> User:
    user = User(email="ops@example.com", password_hash="!x")
    session.add(user)
    session.commit()
    return user


@pytest.fixture
def add_key(register: Callable[..., int], fake: FakeOpenRouter) -> Any:
    """add_key(secret, rows, name=…) → key id: stored encrypted, as in production, and known to
    the fake with those rows (``rows=None``: unknown to the fake, so it answers 401)."""

    def add(
        secret: str,
        rows: list[dict[str, Any]] | None = None,
        name: str | None = None,
        *,
        management: bool = True,
        active: bool = True,
    ) -> int:
        key = register(secret, name or secret[-6:], active=active)
        if rows is not None:
            fake.add_key(secret, management=management, rows=rows)
        return key

    return add


def _run(
    factory: sessionmaker[Session], settings: Settings, keyring: Keyring, **kwargs: Any
) -> RunSummary:
    kwargs.setdefault("trigger", "sync")
    return run_sync(factory, settings, keyring, **kwargs)


def _activity_requests(fake: FakeOpenRouter) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/activity"))


def _results(factory: sessionmaker[Session], run_id: int) -> dict[int, SyncKeyResult]:
    with factory() as s:
        rows = s.execute(select(SyncKeyResult).where(SyncKeyResult.run_id == run_id)).scalars()
        return {r.api_key_id: r for r in rows}


def _run_row(factory: sessionmaker[Session], run_id: int) -> SyncRun:
    with factory() as s:
        run = s.get(SyncRun, run_id)
        assert run is not None
        return run


def test_endpoint_rows_are_summed_exactly_per_day_and_model(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    first = item(D1, "openai/gpt-4.1", endpoint="e1", requests=2, prompt=100, usage="0.1")
    second = item(D1, "openai/gpt-4.1", endpoint="e2", requests=3, prompt=200, usage="0.2")
    first.update(completion_tokens=40, reasoning_tokens=60, byok_usage_inference=Decimal("1e-9"))
    second.update(completion_tokens=10, reasoning_tokens=5, byok_usage_inference=Decimal("1e-9"))
    key = add_key(
        SECRET_A,
        [
            first,
            second,
            item(D1, "anthropic/claude", usage="454.542594979"),
            item(D2, "openai/gpt-4.1", usage="0.000000001"),
        ],
    )
    summary = _run(session_factory, settings, keyring)
    assert (summary.status, summary.keys_ok, summary.keys_failed) == ("ok", 1, 0)
    assert summary.counts == WriteCounts(inserted=3)
    # The whole window in one request, without date=; then the account's keys.
    assert [(r.path, r.query) for r in fake.requests] == [
        ("/api/v1/activity", {}),
        ("/api/v1/workspaces", {"offset": "0", "limit": "100"}),
        ("/api/v1/keys", {"include_disabled": "true", "offset": "0"}),
    ]
    assert summary.requests == 3
    assert stored_usage_of(session_factory, key) == {
        # reasoning (65) is kept apart and never added to the output tokens (50)
        (D1, "openai/gpt-4.1"): (5, 300, 50, 65, Decimal("0.3"), Decimal("0.000000002")),
        (D1, "anthropic/claude"): (1, 0, 0, 0, Decimal("454.542594979"), Decimal(0)),
        (D2, "openai/gpt-4.1"): (1, 0, 0, 0, Decimal("0.000000001"), Decimal(0)),
    }


def test_a_second_identical_run_writes_nothing_and_burns_no_sequence_value(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    add_key: Any,
    engine: Engine,
    usage_triggers: UsageTriggers,
) -> None:
    key = add_key(
        SECRET_A,
        [item(D1, f"m/{i}", usage=f"0.{i}00000001", endpoint=e) for i in range(5) for e in "xy"],
    )
    first = _run(session_factory, settings, keyring)
    assert first.counts == WriteCounts(inserted=5)
    assert usage_triggers.writes() == ["insert"] * 5
    before = stored_usage_of(session_factory, key)
    with engine.connect() as conn:
        seq_before = (
            conn.execute(text("SELECT last_value FROM usage_stats_id_seq")).scalar_one()
            if engine.dialect.name == "postgresql"
            else None
        )

    second = _run(session_factory, settings, keyring)

    assert (second.status, second.counts) == ("ok", WriteCounts(unchanged=5))
    assert usage_triggers.writes() == ["insert"] * 5  # nothing more
    assert stored_usage_of(session_factory, key) == before
    if seq_before is not None:
        with engine.connect() as conn:
            seq = conn.execute(text("SELECT last_value FROM usage_stats_id_seq")).scalar_one()
        assert seq == seq_before


def test_an_identical_answer_on_another_day_is_compared_row_by_row(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
    pinned_clock: PinnedClock,
) -> None:
    # The digest covers the window: the next UTC day the same body is parsed and compared
    # again, so rows changed behind the sync's back are repaired at least daily.
    key = add_key(SECRET_A, [item(D1, "a/x", usage="1"), item(D2, "a/x", usage="2")])
    _run(session_factory, settings, keyring)
    with transaction(session_factory) as s:
        s.execute(
            UsageStats.__table__.update()
            .where(UsageStats.api_key_id == key, UsageStats.date == D1)
            .values(cost=Decimal("99"))
        )
    same_day = _run(session_factory, settings, keyring)
    assert same_day.counts == WriteCounts(unchanged=2)  # the same answer, the same day
    fake.today = TODAY + dt.timedelta(days=1)
    pinned_clock.at(noon(TODAY + dt.timedelta(days=1)))

    next_day = _run(session_factory, settings, keyring)

    assert next_day.counts == WriteCounts(updated=1, unchanged=1)
    assert stored_usage_of(session_factory, key)[(D1, "a/x")][4] == Decimal(1)


def test_a_restated_day_replaces_values_deletes_a_vanished_model_and_leaves_other_days(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(
        SECRET_A,
        [item(D1, "a/x", usage="1"), item(D1, "a/y", usage="2"), item(D2, "a/x", usage="3")],
    )
    _run(session_factory, settings, keyring)
    fake.set_rows(
        SECRET_A, [item(D1, "a/x", requests=7, usage="1.000000001"), item(D2, "a/x", usage="3")]
    )
    summary = _run(session_factory, settings, keyring)
    assert summary.counts == WriteCounts(updated=1, unchanged=1, deleted=1)
    assert stored_usage_of(session_factory, key) == {
        (D1, "a/x"): (7, 0, 0, 0, Decimal("1.000000001"), Decimal(0)),
        (D2, "a/x"): (1, 0, 0, 0, Decimal("3"), Decimal(0)),
    }


def test_a_window_day_without_rows_is_cleared_but_older_history_is_kept(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(SECRET_A, [item(D0, "a/x"), item(D1, "a/x"), item(D2, "a/x")])
    old = TODAY - dt.timedelta(days=45)  # outside the window: history to keep forever
    with transaction(session_factory) as s:
        s.add(UsageStats(api_key_id=key, date=old, model="a/x", cost=Decimal("9")))
    _run(session_factory, settings, keyring)
    fake.set_rows(SECRET_A, [item(D0, "a/x"), item(D2, "a/x")])
    summary = _run(session_factory, settings, keyring)
    assert summary.counts == WriteCounts(unchanged=2, deleted=1)
    assert set(stored_usage_of(session_factory, key)) == {(old, "a/x"), (D0, "a/x"), (D2, "a/x")}


def test_days_before_the_first_day_an_answer_reports_are_kept_not_deleted(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    # OpenRouter's clock turned midnight before ours: its window no longer has our oldest day.
    # An answer without the first days it used to report cannot tell "restated to nothing"
    # from "no longer in my window": those rows are kept, and counted as kept.
    oldest = TODAY - dt.timedelta(days=30)
    key = add_key(SECRET_A, [item(oldest, "a/x"), item(D1, "a/x"), item(D2, "a/x")])
    _run(session_factory, settings, keyring)
    fake.set_rows(SECRET_A, [item(D1, "a/x"), item(D2, "a/x")])
    summary = _run(session_factory, settings, keyring)
    assert summary.counts == WriteCounts(unchanged=2, kept=1)
    assert set(stored_usage_of(session_factory, key)) == {
        (oldest, "a/x"),
        (D1, "a/x"),
        (D2, "a/x"),
    }


def test_backfill_asks_one_request_per_day_and_touches_only_those_days(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(
        SECRET_A,
        [item(D0, "a/x", usage="1"), item(D1, "a/x", usage="1"), item(D2, "a/x", usage="1")],
    )
    _run(session_factory, settings, keyring)
    fake.set_rows(SECRET_A, [item(D0, "a/x", usage="5"), item(D1, "a/x", usage="5")])
    fake.requests.clear()

    summary = _run(session_factory, settings, keyring, trigger="backfill", days=[D2, D1])

    assert sorted(r.query["date"] for r in fake.requests if "date" in r.query) == [
        D1.isoformat(),
        D2.isoformat(),
    ]
    assert (summary.days, _activity_requests(fake)) == ([D1, D2], 2)
    assert summary.counts == WriteCounts(updated=1, deleted=1)
    assert stored_usage_of(session_factory, key) == {
        (D0, "a/x"): (1, 0, 0, 0, Decimal(1), Decimal(0)),
        (D1, "a/x"): (1, 0, 0, 0, Decimal(5), Decimal(0)),
    }
    assert _run_row(session_factory, summary.run_id).trigger == "backfill"
    # The stored rows are no whole-window answer any more: the next sync compares them again.
    fake.set_rows(SECRET_A, [item(D0, "a/x", usage="1"), item(D1, "a/x", usage="1")])
    assert _run(session_factory, settings, keyring).counts == WriteCounts(updated=1, unchanged=1)


def test_failing_keys_never_stop_the_others_and_the_ledger_records_every_outcome(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
    session: Session,
    user: User,
) -> None:
    good = add_key(SECRET_A, [item(D1, "a/x", usage="0.5")], "good")
    ordinary = add_key(SECRET_B, [], "ordinary", management=False)
    down = add_key(SECRET_C, [], "down")
    fake.fail_forever(SECRET_C, Fault(500))
    revoked = add_key(SECRET_D, None, "revoked")  # unknown to OpenRouter: 401
    broken = ApiKey(user_id=user.id, name="broken", key_encrypted="v1:zz:AAAA")
    session.add(broken)
    session.commit()

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        summary = _run(session_factory, settings, keyring)

    assert (summary.status, summary.keys_ok, summary.keys_failed) == ("failed", 1, 3)
    by_id = {k.api_key_id: k for k in summary.keys}
    assert by_id[good].status == "ok"
    assert {
        k: (by_id[k].status, by_id[k].reason) for k in (ordinary, down, revoked, broken.id)
    } == {
        # An ordinary key (403) is no failure: no registered management key lists it.
        ordinary: ("warning", "needs_management_key"),
        down: ("failed", "upstream_unavailable"),
        revoked: ("failed", "unauthorized"),
        broken.id: ("failed", "decrypt_failed"),
    }
    assert "register the management key of its account" in (by_id[ordinary].error or "")
    assert by_id[down].http_requests == 3  # the failed call's retries are counted
    assert by_id[broken.id].http_requests == 0
    assert "cannot decrypt api key" in (by_id[broken.id].error or "")
    assert fake.request_count(SECRET_C) == 3

    assert set(stored_usage_of(session_factory, good)) == {(D1, "a/x")}
    for failed in (ordinary, down, revoked, broken.id):
        assert stored_usage_of(session_factory, failed) == {}

    run = _run_row(session_factory, summary.run_id)
    assert (run.trigger, run.status, run.keys_ok, run.keys_failed) == ("sync", "failed", 1, 3)
    assert run.finished_at is not None
    results = _results(session_factory, summary.run_id)
    assert {k: (r.status, r.reason) for k, r in results.items()} == {
        good: ("ok", None),
        ordinary: ("warning", "needs_management_key"),
        down: ("failed", "upstream_unavailable"),
        revoked: ("failed", "unauthorized"),
        broken.id: ("failed", "decrypt_failed"),
    }
    assert (results[good].rows_inserted, results[good].http_requests, results[good].error) == (
        1,
        3,  # its /activity, and its account's /workspaces and /keys
        None,
    )

    with session_factory() as s:
        kinds = {
            k.id: (k.kind, k.last_used_at is not None) for k in s.execute(select(ApiKey)).scalars()
        }
    assert kinds[good] == ("management", True)
    assert kinds[ordinary] == ("ordinary", False)
    assert kinds[revoked] == (None, False)

    failures = [e for e in logs if e["event"] == "key_sync_failed"]
    assert {e["api_key_id"]: e["reason"] for e in failures} == {
        down: "upstream_unavailable",
        revoked: "unauthorized",
        broken.id: "decrypt_failed",
    }
    assert all(e["run_id"] == summary.run_id and e["user_id"] == user.id for e in failures)
    assert [e["api_key_id"] for e in logs if e["event"] == "key_needs_management_key"] == [ordinary]
    finished = [e for e in logs if e["event"] == "sync_finished"]
    assert [(e["keys_ok"], e["keys_failed"]) for e in finished] == [(1, 3)]
    for secret in (SECRET_A, SECRET_B, SECRET_C, SECRET_D):
        assert secret not in repr(logs)
        assert secret not in repr(summary.as_dict())


def test_an_invalid_answer_fails_the_key_before_anything_is_written(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    add_key: Any,
) -> None:
    bad = item(D1, "a/y")
    bad["usage"] = "0.5"  # a string: the contract says number
    key = add_key(SECRET_A, [item(D1, "a/x"), bad])
    summary = _run(session_factory, settings, keyring)
    assert (summary.keys[0].reason, summary.keys[0].http_requests) == ("invalid_response", 1)
    assert "row 1 field 'usage'" in (summary.keys[0].error or "")
    assert stored_usage_of(session_factory, key) == {}


def test_a_key_whose_write_fails_is_rolled_back_whole(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
    usage_triggers: UsageTriggers,
) -> None:
    victim = add_key(SECRET_A, [item(D1, "a/x", usage="1"), item(D1, "a/y", usage="1")])
    other = add_key(SECRET_B, [item(D1, "a/x", usage="2")])
    _run(session_factory, settings, keyring)
    # The restatement updates a/x, then must delete a/y: make every DELETE fail.
    fake.set_rows(SECRET_A, [item(D1, "a/x", usage="9")])
    fake.set_rows(SECRET_B, [item(D1, "a/x", usage="3")])
    usage_triggers.fail("DELETE", "disk full")
    summary = _run(session_factory, settings, keyring)
    by_id = {k.api_key_id: k for k in summary.keys}
    assert (by_id[victim].status, by_id[victim].reason) == ("failed", "unexpected")
    assert by_id[victim].counts == WriteCounts()
    assert "disk full" in (by_id[victim].error or "")
    # Neither the update of a/x nor anything else of the victim's transaction survived.
    assert stored_usage_of(session_factory, victim) == {
        (D1, "a/x"): (1, 0, 0, 0, Decimal(1), Decimal(0)),
        (D1, "a/y"): (1, 0, 0, 0, Decimal(1), Decimal(0)),
    }
    assert stored_usage_of(session_factory, other)[(D1, "a/x")][4] == Decimal(3)
    assert _results(session_factory, summary.run_id)[victim].status == "failed"


def test_a_key_deleted_while_its_answer_is_on_the_way_fails_alone(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    good_a = add_key(SECRET_A, [item(D1, "a/x")])
    victim = add_key(SECRET_B, [item(D1, "a/x")])
    good_b = add_key(SECRET_C, [item(D1, "a/x")])
    arrived: list[str] = []

    def delete_the_victim(path: str, _query: dict[str, str]) -> None:
        # One key at a time, in id order: the second request is the victim's.
        arrived.append(path)
        if len(arrived) == 2:
            with transaction(session_factory) as s:
                s.execute(delete(ApiKey).where(ApiKey.id == victim))

    fake.on_request = delete_the_victim
    with structlog.testing.capture_logs() as logs:
        summary = _run(session_factory, settings.replace("sync", concurrency=1), keyring)

    by_id = {o.api_key_id: o for o in summary.keys}
    assert {i: by_id[i].status for i in by_id} == {good_a: "ok", victim: "failed", good_b: "ok"}
    assert by_id[victim].reason == "unexpected"  # the foreign key refused its rows
    assert set(stored_usage_of(session_factory, good_a)) == {(D1, "a/x")}
    assert set(stored_usage_of(session_factory, good_b)) == {(D1, "a/x")}
    assert stored_usage_of(session_factory, victim) == {}
    # Its transaction was rolled back, then tried once more, alone, before it was recorded.
    assert "group_write_failed" in [e["event"] for e in logs]


def test_only_the_requested_active_keys_are_synced(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    a = add_key(SECRET_A, [item(D1, "a/x")])
    add_key(SECRET_B, [item(D1, "a/x")])
    inactive = add_key(SECRET_C, [item(D1, "a/x")], active=False)
    summary = _run(session_factory, settings, keyring, key_ids=[a])
    assert [k.api_key_id for k in summary.keys] == [a]
    assert _activity_requests(fake) == fake.request_count(SECRET_A) - 2 == 1
    with pytest.raises(NotFoundError, match=f"id {inactive}"):
        _run(session_factory, settings, keyring, key_ids=[a, inactive])
    with session_factory() as s:
        assert len(s.execute(select(SyncRun)).scalars().all()) == 1


def test_days_outside_the_window_are_refused_before_anything_happens(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    add_key(SECRET_A, [item(D1, "a/x")])
    for day in (TODAY, TODAY + dt.timedelta(days=1), TODAY - dt.timedelta(days=366)):
        with pytest.raises(UsageError):
            _run(session_factory, settings, keyring, trigger="backfill", days=[day])
    assert fake.request_count() == 0
    with session_factory() as s:
        assert s.execute(select(SyncRun)).scalars().all() == []


def test_fetches_run_concurrently_but_never_more_than_the_limit(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    ids = [add_key(f"sk-or-v1-{i:064d}", [item(D1, "a/x")], f"k{i}") for i in range(7)]
    fake.latency = 0.05
    summary = _run(session_factory, settings.replace("sync", concurrency=2), keyring)
    assert sorted(k.api_key_id for k in summary.keys) == ids
    assert summary.keys_ok == 7
    assert fake.max_in_flight == 2


def test_stop_starts_no_new_key_and_marks_the_run_interrupted(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    first = add_key(SECRET_A, [item(D1, "a/x")])
    add_key(SECRET_B, [item(D1, "a/x")])
    add_key(SECRET_C, [item(D1, "a/x")])
    stop = threading.Event()
    fake.on_request = lambda _path, _query: stop.set()  # the first fetch asks to stop
    summary = _run(session_factory, settings.replace("sync", concurrency=1), keyring, stop=stop)
    assert summary.status == "interrupted"
    assert [k.api_key_id for k in summary.keys] == [first]  # the one in flight finished whole
    # One key's /activity (and its account's /workspaces and /keys), no other.
    assert (summary.keys_skipped, _activity_requests(fake)) == (2, 1)
    assert set(stored_usage_of(session_factory, first)) == {(D1, "a/x")}
    run = _run_row(session_factory, summary.run_id)
    assert (run.status, run.keys_ok, run.keys_failed) == ("interrupted", 1, 0)


def test_the_next_fetch_does_not_wait_for_the_previous_write(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
    engine: Engine,
) -> None:
    add_key(SECRET_A, [item(D1, "a/x")])
    add_key(SECRET_B, [item(D1, "a/x")])
    arrived: list[str] = []
    second_arrived = threading.Event()
    first_written = threading.Event()

    def on_request(path: str, _query: dict[str, str]) -> None:
        if path != "/activity":  # the account listings (/workspaces, /keys) come after
            return
        arrived.append(path)
        if len(arrived) == 2:
            second_arrived.set()
            first_written.wait(timeout=10)  # the second answer waits for the first write

    held: list[bool] = []

    def hold_first_write(_conn: Any) -> None:
        # The first commit after a fetch is the first key's write: it goes through only once
        # the second key's request has arrived (or after 10 s, if that fetch waited for this
        # write: then the test fails).
        if arrived and not held:
            held.append(second_arrived.wait(timeout=10))
            first_written.set()

    fake.on_request = on_request
    event.listen(engine, "commit", hold_first_write)
    try:
        summary = _run(session_factory, settings.replace("sync", concurrency=1), keyring)
    finally:
        event.remove(engine, "commit", hold_first_write)
    assert summary.keys_ok == 2
    assert held == [True]


def test_an_interrupted_run_is_closed_and_leaves_no_thread_behind(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
    engine: Engine,
) -> None:
    for secret in (SECRET_A, SECRET_B, SECRET_C, SECRET_D):
        add_key(secret, [item(D1, "a/x")])
    interrupted: list[bool] = []

    def interrupt(_conn: Any) -> None:
        # Ctrl-C in the middle of the first key's write (once only: the run is then closed).
        if not interrupted and fake.request_count() >= 1:
            interrupted.append(True)
            raise KeyboardInterrupt

    event.listen(engine, "commit", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(session_factory, settings.replace("sync", concurrency=1), keyring)
    finally:
        event.remove(engine, "commit", interrupt)

    assert not [t for t in threading.enumerate() if t.name.startswith("sync-fetch")]
    # The one being written and the one fetched meanwhile.
    assert _activity_requests(fake) <= 2
    with session_factory() as s:
        runs = s.execute(select(SyncRun)).scalars().all()
    assert [(r.status, r.finished_at is not None) for r in runs] == [("interrupted", True)]


# --- never lose a day ----------------------------------------------------------------------


def test_a_sync_that_crosses_midnight_deletes_no_day_it_could_not_have_covered(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
    pinned_clock: PinnedClock,
) -> None:
    oldest = TODAY - dt.timedelta(days=30)  # in the run's window, gone from the next one
    key = add_key(SECRET_A, [item(oldest, "a/x", usage="7"), item(D2, "a/x")])
    _run(session_factory, settings, keyring)
    # The next run starts just before midnight; OpenRouter (and our clock) turn midnight
    # while the answer is on its way: it covers TODAY-29 … TODAY, without the oldest day.
    pinned_clock.at(dt.datetime(2026, 11, 26, 23, 59, 59, tzinfo=dt.UTC))
    fake.set_rows(SECRET_A, [item(D2, "a/x"), item(TODAY, "a/x", usage="3")])

    def midnight(_path: str, _query: dict[str, str]) -> None:
        fake.today = TODAY + dt.timedelta(days=1)
        pinned_clock.at(dt.datetime(2026, 11, 27, 0, 0, 1, tzinfo=dt.UTC))

    fake.on_request = midnight
    summary = _run(session_factory, settings, keyring)

    assert (summary.status, summary.counts) == ("ok", WriteCounts(inserted=1, unchanged=1))
    stored = stored_usage_of(session_factory, key)
    assert stored[(oldest, "a/x")][4] == Decimal(7)  # not deleted: the answer never covered it
    assert stored[(TODAY, "a/x")][4] == Decimal(3)  # the day that just completed is stored


def test_an_empty_answer_after_a_good_sync_is_held_back_until_seen_again_much_later(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
    usage_triggers: UsageTriggers,
    pinned_clock: PinnedClock,
) -> None:
    key = add_key(SECRET_A, [item(D0, "a/x"), item(D1, "a/x"), item(D2, "a/x")])
    _run(session_factory, settings, keyring)
    fake.set_rows(SECRET_A, [])

    held = _run(session_factory, settings, keyring)

    assert (held.status, held.keys[0].status, held.keys[0].reason) == (
        "failed",
        "failed",
        "suspicious_answer",
    )
    assert "would delete 3 of the 3 rows" in (held.keys[0].error or "")
    assert len(stored_usage_of(session_factory, key)) == 3
    assert usage_triggers.writes() == ["insert"] * 3
    assert _results(session_factory, held.run_id)[key].reason == "suspicious_answer"
    # The same answer a few hours later is still held back...
    pinned_clock.at(dt.datetime(2026, 11, 26, 19, tzinfo=dt.UTC))
    assert _run(session_factory, settings, keyring).keys[0].reason == "suspicious_answer"
    # ...and applied once it has been seen for [sync] confirm_delete_after_hours (20).
    pinned_clock.at(dt.datetime(2026, 11, 27, 8, 30, tzinfo=dt.UTC))
    fake.today = TODAY + dt.timedelta(days=1)
    applied = _run(session_factory, settings, keyring)
    assert (applied.status, applied.counts) == ("ok", WriteCounts(deleted=3))
    assert stored_usage_of(session_factory, key) == {}


def test_a_good_answer_between_two_empty_ones_restarts_the_wait(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
    pinned_clock: PinnedClock,
) -> None:
    good = [item(D0, "a/x"), item(D1, "a/x"), item(D2, "a/x")]
    key = add_key(SECRET_A, good)
    _run(session_factory, settings, keyring)
    fake.set_rows(SECRET_A, [])
    assert _run(session_factory, settings, keyring).keys[0].reason == "suspicious_answer"
    # OpenRouter flaps: the good answer again (identical to what is stored)...
    pinned_clock.at(dt.datetime(2026, 11, 26, 19, tzinfo=dt.UTC))
    fake.set_rows(SECRET_A, good)
    assert _run(session_factory, settings, keyring).status == "ok"
    # ...then the empty one, past the first sighting's 20 hours: a new sighting, held back.
    pinned_clock.at(dt.datetime(2026, 11, 27, 8, 30, tzinfo=dt.UTC))
    fake.today = TODAY + dt.timedelta(days=1)
    fake.set_rows(SECRET_A, [])
    assert _run(session_factory, settings, keyring).keys[0].reason == "suspicious_answer"
    assert len(stored_usage_of(session_factory, key)) == 3


def test_a_partial_answer_is_held_back_past_the_configured_fraction_only(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    models = [item(D1, f"m/{i}") for i in range(4)]
    key = add_key(SECRET_A, [item(D0, "a/x"), *models])
    _run(session_factory, settings, keyring)
    fake.set_rows(SECRET_A, [item(D0, "a/x"), models[0]])  # would delete 3 of 5

    assert _run(session_factory, settings, keyring).keys[0].reason == "suspicious_answer"
    assert len(stored_usage_of(session_factory, key)) == 5
    lenient = settings.replace("sync", max_delete_fraction=0.6)
    assert _run(session_factory, lenient, keyring).counts == WriteCounts(unchanged=2, deleted=3)


def test_backfill_of_explicit_days_applies_what_a_sync_holds_back(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(SECRET_A, [item(D1, "a/x"), item(D2, "a/x")])
    _run(session_factory, settings, keyring)
    fake.set_rows(SECRET_A, [])
    assert _run(session_factory, settings, keyring).keys[0].reason == "suspicious_answer"

    forced = _run(session_factory, settings, keyring, trigger="backfill", days=[D1, D2])

    assert (forced.status, forced.counts) == ("ok", WriteCounts(deleted=2))
    assert stored_usage_of(session_factory, key) == {}
