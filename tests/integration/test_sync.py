"""worker.sync.run_sync against a scripted client, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, delete, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from worker import store
from worker import sync as sync_module
from worker.config import Settings
from worker.crypto import Keyring
from worker.db import transaction
from worker.errors import (
    InvalidResponseError,
    NotFoundError,
    NotManagementKeyError,
    UnauthorizedError,
    UpstreamUnavailableError,
    UsageError,
)
from worker.models import ApiKey, SyncKeyResult, SyncRun, UsageStats, User
from worker.openrouter import ActivityResult, ActivityRow
from worker.store import ActiveKey, UsageRow, WriteCounts
from worker.sync import RunSummary, _Fetched, _store_keys, run_sync, window_days
from worker.testing.usage import stored_usage_of

TODAY = dt.date(2026, 11, 26)
D1 = dt.date(2026, 11, 24)
D2 = dt.date(2026, 11, 25)
D0 = dt.date(2026, 11, 20)


def act(
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
) -> ActivityRow:
    return ActivityRow(
        date=day,
        model=model,
        endpoint_id=endpoint,
        provider_name="P",
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        usage=Decimal(usage),
        byok_usage_inference=Decimal(byok),
    )


class StubOpenRouter:
    """Per-secret scripted answers: a list of rows or an exception; records every call."""

    def __init__(self) -> None:
        self.answers: dict[str, list[ActivityRow] | BaseException] = {}
        self.calls: list[tuple[str, dt.date | None]] = []
        self.clients = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.on_call: Any = None
        self._lock = threading.Lock()

    def factory(self) -> StubClient:
        with self._lock:
            self.clients += 1
        return StubClient(self)


class StubClient:
    def __init__(self, stub: StubOpenRouter) -> None:
        self.stub = stub
        self.requests_made = 0
        self.closed = False

    def get_activity(
        self, api_key: str, *, day: dt.date | None = None, today: dt.date | None = None
    ) -> ActivityResult:
        stub = self.stub
        with stub._lock:
            stub.calls.append((api_key, day))
            stub.in_flight += 1
            stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
        try:
            self.requests_made += 1
            if stub.on_call is not None:
                stub.on_call(api_key, day)
            answer = stub.answers[api_key]
            if isinstance(answer, BaseException):
                self.requests_made += 2  # as if retried
                raise answer
            rows = [r for r in answer if day is None or r.date == day]
            return ActivityResult(rows=rows, requests_made=1)
        finally:
            with stub._lock:
                stub.in_flight -= 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def stub() -> StubOpenRouter:
    return StubOpenRouter()


@pytest.fixture
def settings() -> Settings:
    return Settings().replace("sync", concurrency=4)


@pytest.fixture
def user(session: Session) -> User:
    user = User(email="ops@example.com", password_hash="!x")
    session.add(user)
    session.commit()
    return user


@pytest.fixture
def add_key(session: Session, user: User, keyring: Keyring) -> Any:
    """add_key(secret, name=…) → key id; the secret is stored encrypted, as in production."""

    def add(secret: str, name: str | None = None, *, active: bool = True) -> int:
        key = ApiKey(
            user_id=user.id, name=name or secret[-6:], key_encrypted="pending", is_active=active
        )
        session.add(key)
        session.flush()
        key.key_encrypted = keyring.encrypt(secret, user_id=user.id, key_id=key.id)
        session.commit()
        return key.id

    return add


def _run(
    factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    **kwargs: Any,
) -> RunSummary:
    kwargs.setdefault("trigger", "sync")
    return run_sync(factory, settings, keyring, today=TODAY, client_factory=stub.factory, **kwargs)


def _results(factory: sessionmaker[Session], run_id: int) -> dict[int, SyncKeyResult]:
    with factory() as s:
        rows = s.execute(select(SyncKeyResult).where(SyncKeyResult.run_id == run_id)).scalars()
        return {r.api_key_id: r for r in rows}


def _run_row(factory: sessionmaker[Session], run_id: int) -> SyncRun:
    with factory() as s:
        run = s.get(SyncRun, run_id)
        assert run is not None
        return run


SECRET_A = "sk-or-v1-" + "a" * 64
SECRET_B = "sk-or-v1-" + "b" * 64
SECRET_C = "sk-or-v1-" + "c" * 64
SECRET_D = "sk-or-v1-" + "d" * 64


def test_endpoint_rows_are_summed_exactly_per_day_and_model(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(SECRET_A)
    stub.answers[SECRET_A] = [
        act(
            D1,
            "openai/gpt-4.1",
            endpoint="e1",
            requests=2,
            prompt=100,
            completion=40,
            reasoning=60,
            usage="0.1",
            byok="0.000000001",
        ),
        act(
            D1,
            "openai/gpt-4.1",
            endpoint="e2",
            requests=3,
            prompt=200,
            completion=10,
            reasoning=5,
            usage="0.2",
            byok="0.000000001",
        ),
        act(D1, "anthropic/claude", usage="454.542594979"),
        act(D2, "openai/gpt-4.1", usage="0.000000001"),
    ]
    summary = _run(session_factory, settings, keyring, stub)
    assert (summary.status, summary.keys_ok, summary.keys_failed) == ("ok", 1, 0)
    assert summary.counts == WriteCounts(inserted=3)
    assert summary.requests == 1
    assert stub.calls == [(SECRET_A, None)]  # the whole window in one request
    assert stored_usage_of(session_factory, key) == {
        # reasoning (65) is kept apart and never added to the output tokens (50)
        (D1, "openai/gpt-4.1"): (5, 300, 50, 65, Decimal("0.3"), Decimal("0.000000002")),
        (D1, "anthropic/claude"): (1, 0, 0, 0, Decimal("454.542594979"), Decimal(0)),
        (D2, "openai/gpt-4.1"): (1, 0, 0, 0, Decimal("0.000000001"), Decimal(0)),
    }
    cost = stored_usage_of(session_factory, key)[(D1, "openai/gpt-4.1")][4]
    assert cost == Decimal("0.1") + Decimal("0.2")


def test_a_second_identical_run_changes_nothing(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
    engine: Engine,
) -> None:
    key = add_key(SECRET_A)
    stub.answers[SECRET_A] = [
        act(D1, f"m/{i}", usage=f"0.{i}00000001", endpoint=e)
        for i in range(5)
        for e in ("e1", "e2")
    ]
    first = _run(session_factory, settings, keyring, stub)
    assert first.counts == WriteCounts(inserted=5)
    before = stored_usage_of(session_factory, key)
    with engine.connect() as conn:
        ids_before = conn.execute(text("SELECT id FROM usage_stats ORDER BY id")).scalars().all()
        seq_before = (
            conn.execute(text("SELECT last_value FROM usage_stats_id_seq")).scalar_one()
            if engine.dialect.name == "postgresql"
            else None
        )

    writes: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            statement.lstrip()
            .upper()
            .startswith(("INSERT INTO USAGE_STATS", "DELETE FROM USAGE_STATS"))
        ):
            writes.append(statement)

    event.listen(engine, "before_cursor_execute", watch)
    try:
        second = _run(session_factory, settings, keyring, stub)
    finally:
        event.remove(engine, "before_cursor_execute", watch)
    assert second.counts == WriteCounts(unchanged=5)
    assert second.status == "ok"
    assert writes == []
    assert stored_usage_of(session_factory, key) == before
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT id FROM usage_stats ORDER BY id")).scalars().all()
            == ids_before
        )
        if seq_before is not None:
            assert (
                conn.execute(text("SELECT last_value FROM usage_stats_id_seq")).scalar_one()
                == seq_before
            )


def test_a_restated_day_replaces_values_deletes_a_vanished_model_and_leaves_other_days(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(SECRET_A)
    stub.answers[SECRET_A] = [
        act(D1, "a/x", usage="1"),
        act(D1, "a/y", usage="2"),
        act(D2, "a/x", usage="3"),
    ]
    _run(session_factory, settings, keyring, stub)
    stub.answers[SECRET_A] = [
        act(D1, "a/x", requests=7, usage="1.000000001"),
        act(D2, "a/x", usage="3"),
    ]
    summary = _run(session_factory, settings, keyring, stub)
    assert summary.counts == WriteCounts(updated=1, unchanged=1, deleted=1)
    assert stored_usage_of(session_factory, key) == {
        (D1, "a/x"): (7, 0, 0, 0, Decimal("1.000000001"), Decimal(0)),
        (D2, "a/x"): (1, 0, 0, 0, Decimal("3"), Decimal(0)),
    }


def test_a_sync_clears_a_window_day_that_now_has_no_rows_but_keeps_older_history(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(SECRET_A)
    old = TODAY - dt.timedelta(days=45)  # outside the window: history to keep forever
    with transaction(session_factory) as s:
        s.add(UsageStats(api_key_id=key, date=old, model="a/x", cost=Decimal("9")))
    stub.answers[SECRET_A] = [act(D1, "a/x"), act(D2, "a/x")]
    _run(session_factory, settings, keyring, stub)
    stub.answers[SECRET_A] = [act(D2, "a/x")]
    summary = _run(session_factory, settings, keyring, stub)
    assert summary.counts == WriteCounts(unchanged=1, deleted=1)
    assert set(stored_usage_of(session_factory, key)) == {(old, "a/x"), (D2, "a/x")}


def test_backfill_fetches_one_request_per_day_and_touches_only_those_days(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(SECRET_A)
    stub.answers[SECRET_A] = [
        act(D0, "a/x", usage="1"),
        act(D1, "a/x", usage="1"),
        act(D2, "a/x", usage="1"),
    ]
    _run(session_factory, settings, keyring, stub)
    stub.answers[SECRET_A] = [act(D0, "a/x", usage="5"), act(D1, "a/x", usage="5")]
    stub.calls.clear()
    summary = _run(session_factory, settings, keyring, stub, trigger="backfill", days=[D2, D1])
    assert sorted(stub.calls, key=str) == [(SECRET_A, D1), (SECRET_A, D2)]
    assert summary.days == [D1, D2]
    assert summary.requests == 2
    assert summary.counts == WriteCounts(updated=1, deleted=1)
    stored = stored_usage_of(session_factory, key)
    assert stored == {
        (D0, "a/x"): (1, 0, 0, 0, Decimal(1), Decimal(0)),
        (D1, "a/x"): (1, 0, 0, 0, Decimal(5), Decimal(0)),
    }
    assert _run_row(session_factory, summary.run_id).trigger == "backfill"


def test_failing_keys_never_stop_the_others_and_the_ledger_records_every_outcome(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
    session: Session,
    user: User,
) -> None:
    good = add_key(SECRET_A, "good")
    ordinary = add_key(SECRET_B, "ordinary")
    down = add_key(SECRET_C, "down")
    revoked = add_key(SECRET_D, "revoked")
    broken = ApiKey(user_id=user.id, name="broken", key_encrypted="v1:zz:AAAA")
    session.add(broken)
    session.commit()
    stub.answers[SECRET_A] = [act(D1, "a/x", usage="0.5")]
    stub.answers[SECRET_B] = NotManagementKeyError(
        "OpenRouter refused the request (403): per-model history needs a management key"
    )
    stub.answers[SECRET_C] = UpstreamUnavailableError("OpenRouter kept answering 500")
    stub.answers[SECRET_D] = UnauthorizedError()

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        summary = _run(session_factory, settings, keyring, stub)

    assert (summary.status, summary.keys_ok, summary.keys_failed) == ("failed", 1, 4)
    by_id = {k.api_key_id: k for k in summary.keys}
    assert by_id[good].status == "ok"
    assert {k: by_id[k].reason for k in (ordinary, down, revoked, broken.id)} == {
        ordinary: "not_management_key",
        down: "upstream_unavailable",
        revoked: "unauthorized",
        broken.id: "decrypt_failed",
    }
    assert "management key" in (by_id[ordinary].error or "")
    assert by_id[down].http_requests == 3  # the failed call's retries are counted
    assert by_id[broken.id].http_requests == 0
    assert "cannot decrypt api key" in (by_id[broken.id].error or "")

    assert set(stored_usage_of(session_factory, good)) == {(D1, "a/x")}
    for failed in (ordinary, down, revoked, broken.id):
        assert stored_usage_of(session_factory, failed) == {}

    run = _run_row(session_factory, summary.run_id)
    assert (run.trigger, run.status, run.keys_ok, run.keys_failed) == ("sync", "failed", 1, 4)
    assert run.finished_at is not None
    results = _results(session_factory, summary.run_id)
    assert {k: r.status for k, r in results.items()} == {
        good: "ok",
        ordinary: "failed",
        down: "failed",
        revoked: "failed",
        broken.id: "failed",
    }
    assert (results[good].rows_inserted, results[good].http_requests, results[good].error) == (
        1,
        1,
        None,
    )
    assert results[ordinary].error == by_id[ordinary].error

    with session_factory() as s:
        kinds = {
            k.id: (k.kind, k.last_used_at is not None) for k in s.execute(select(ApiKey)).scalars()
        }
    assert kinds[good] == ("management", True)
    assert kinds[ordinary] == ("ordinary", False)
    assert kinds[revoked] == (None, False)

    failures = [e for e in logs if e["event"] == "key_sync_failed"]
    assert {e["api_key_id"]: e["reason"] for e in failures} == {
        ordinary: "not_management_key",
        down: "upstream_unavailable",
        revoked: "unauthorized",
        broken.id: "decrypt_failed",
    }
    assert all(e["run_id"] == summary.run_id and e["user_id"] == user.id for e in failures)
    finished = [e for e in logs if e["event"] == "sync_finished"]
    assert len(finished) == 1
    assert (finished[0]["keys_ok"], finished[0]["keys_failed"]) == (1, 4)
    for secret in (SECRET_A, SECRET_B, SECRET_C, SECRET_D):
        assert secret not in repr(logs)
        assert secret not in repr(summary.as_dict())


def test_a_key_whose_write_fails_is_rolled_back_whole(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
    engine: Engine,
) -> None:
    victim = add_key(SECRET_A)
    other = add_key(SECRET_B)
    stub.answers[SECRET_A] = [act(D1, "a/x", usage="1"), act(D1, "a/y", usage="1")]
    stub.answers[SECRET_B] = [act(D1, "a/x", usage="2")]
    _run(session_factory, settings, keyring, stub)
    # The restatement updates a/x, then must delete a/y: make that DELETE fail.
    stub.answers[SECRET_A] = [act(D1, "a/x", usage="9")]
    stub.answers[SECRET_B] = [act(D1, "a/x", usage="3")]

    def fail_delete(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM USAGE_STATS"):
            raise RuntimeError("disk full")

    event.listen(engine, "before_cursor_execute", fail_delete)
    try:
        summary = _run(session_factory, settings, keyring, stub)
    finally:
        event.remove(engine, "before_cursor_execute", fail_delete)
    by_id = {k.api_key_id: k for k in summary.keys}
    assert by_id[victim].status == "failed"
    assert by_id[victim].reason == "unexpected"
    assert by_id[victim].counts == WriteCounts()
    assert "disk full" in (by_id[victim].error or "")
    # Neither the update of a/x nor anything else of the victim's transaction survived.
    assert stored_usage_of(session_factory, victim) == {
        (D1, "a/x"): (1, 0, 0, 0, Decimal(1), Decimal(0)),
        (D1, "a/y"): (1, 0, 0, 0, Decimal(1), Decimal(0)),
    }
    assert stored_usage_of(session_factory, other)[(D1, "a/x")][4] == Decimal(3)
    assert _results(session_factory, summary.run_id)[victim].status == "failed"


def test_invalid_rows_fail_the_key_before_anything_is_written(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
) -> None:
    key = add_key(SECRET_A)
    stub.answers[SECRET_A] = InvalidResponseError("OpenRouter /activity: row 3: field 'usage'")
    summary = _run(session_factory, settings, keyring, stub)
    assert summary.keys[0].reason == "invalid_response"
    assert stored_usage_of(session_factory, key) == {}


def test_only_the_requested_active_keys_are_synced(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
) -> None:
    a = add_key(SECRET_A)
    add_key(SECRET_B)
    inactive = add_key(SECRET_C, active=False)
    stub.answers[SECRET_A] = [act(D1, "a/x")]
    summary = _run(session_factory, settings, keyring, stub, key_ids=[a])
    assert [k.api_key_id for k in summary.keys] == [a]
    assert stub.calls == [(SECRET_A, None)]
    with pytest.raises(NotFoundError, match=f"id {inactive}"):
        _run(session_factory, settings, keyring, stub, key_ids=[a, inactive])
    with session_factory() as s:
        assert s.execute(select(SyncRun)).scalars().all().__len__() == 1


def test_days_outside_the_window_are_refused_before_anything_happens(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
) -> None:
    add_key(SECRET_A)
    for day in (TODAY, TODAY + dt.timedelta(days=1), TODAY - dt.timedelta(days=31)):
        with pytest.raises(UsageError):
            _run(session_factory, settings, keyring, stub, trigger="backfill", days=[day])
    assert stub.calls == []
    with session_factory() as s:
        assert s.execute(select(SyncRun)).scalars().all() == []


def test_fetches_run_concurrently_but_never_more_than_the_limit(
    session_factory: sessionmaker[Session], keyring: Keyring, stub: StubOpenRouter, add_key: Any
) -> None:
    secrets = [f"sk-or-v1-{i:064d}" for i in range(7)]
    ids = [add_key(s, f"k{i}") for i, s in enumerate(secrets)]
    for s in secrets:
        stub.answers[s] = [act(D1, "a/x")]
    summary = _run(session_factory, Settings().replace("sync", concurrency=2), keyring, stub)
    assert sorted(k.api_key_id for k in summary.keys) == ids
    assert summary.keys_ok == 7
    assert stub.max_in_flight <= 2
    assert stub.clients <= 2  # one client per worker thread, not per key


def test_stop_starts_no_new_key_and_marks_the_run_interrupted(
    session_factory: sessionmaker[Session], keyring: Keyring, stub: StubOpenRouter, add_key: Any
) -> None:
    first = add_key(SECRET_A)
    add_key(SECRET_B)
    add_key(SECRET_C)
    for s in (SECRET_A, SECRET_B, SECRET_C):
        stub.answers[s] = [act(D1, "a/x")]
    stop = threading.Event()
    stub.on_call = lambda _key, _day: stop.set()  # the first fetch asks to stop
    summary = _run(
        session_factory, Settings().replace("sync", concurrency=1), keyring, stub, stop=stop
    )
    assert summary.status == "interrupted"
    assert [k.api_key_id for k in summary.keys] == [first]  # the one in flight finished whole
    assert summary.keys_skipped == 2
    assert set(stored_usage_of(session_factory, first)) == {(D1, "a/x")}
    run = _run_row(session_factory, summary.run_id)
    assert (run.status, run.keys_ok, run.keys_failed) == ("interrupted", 1, 0)


def test_a_run_cut_short_by_an_exception_is_closed_as_interrupted(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
) -> None:
    add_key(SECRET_A)

    def boom() -> Iterator[Any]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sync(
            session_factory, settings, keyring, today=TODAY, trigger="sync", client_factory=boom
        )  # type: ignore[arg-type]
    with session_factory() as s:
        runs = s.execute(select(SyncRun)).scalars().all()
    assert [(r.status, r.finished_at is not None) for r in runs] == [("interrupted", True)]


# --- the writer: group commits, and fetches that never wait for writes ---------------------------


def _fetched(key_id: int, user_id: int, rows: list[UsageRow]) -> _Fetched:
    key = ActiveKey(id=key_id, user_id=user_id, name=f"k{key_id}", key_encrypted="unused")
    return _Fetched(key, rows, http_requests=1, accepted=True)


def _count_commits(engine: Engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    return commits


def test_answers_that_arrive_together_are_written_in_one_transaction(
    session_factory: sessionmaker[Session], engine: Engine, add_key: Any, user: User
) -> None:
    ids = [add_key(s) for s in (SECRET_A, SECRET_B, SECRET_C)]
    with transaction(session_factory) as s:
        run_id = store.start_run(s, "sync")
    days = window_days(TODAY)
    batch = [_fetched(i, user.id, [UsageRow(D1, "a/x", n + 1)]) for n, i in enumerate(ids)]
    commits = _count_commits(engine)

    outcomes = _store_keys(session_factory, run_id, batch, days)

    assert len(commits) == 1
    assert [(o.api_key_id, o.status, o.counts.inserted) for o in outcomes] == [
        (i, "ok", 1) for i in ids
    ]
    assert [stored_usage_of(session_factory, i)[(D1, "a/x")][0] for i in ids] == [1, 2, 3]
    results = _results(session_factory, run_id)
    assert {i: (r.status, r.rows_inserted, r.http_requests) for i, r in results.items()} == {
        i: ("ok", 1, 1) for i in ids
    }
    with session_factory() as s:
        keys = s.execute(select(ApiKey).where(ApiKey.id.in_(ids))).scalars().all()
        assert {(k.kind, k.last_used_at is not None) for k in keys} == {("management", True)}


def test_a_group_is_split_when_it_would_hold_too_many_rows(
    session_factory: sessionmaker[Session],
    engine: Engine,
    add_key: Any,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [add_key(s) for s in (SECRET_A, SECRET_B, SECRET_C)]
    with transaction(session_factory) as s:
        run_id = store.start_run(s, "sync")
    monkeypatch.setattr(sync_module, "GROUP_COMMIT_ROWS", 3)
    two_rows = [UsageRow(D1, "a/x", 1), UsageRow(D2, "a/x", 1)]
    batch = [_fetched(i, user.id, two_rows) for i in ids]
    commits = _count_commits(engine)

    outcomes = _store_keys(session_factory, run_id, batch, window_days(TODAY))

    assert len(commits) == 3  # 2 + 2 rows would pass 3: one key per transaction
    assert [o.status for o in outcomes] == ["ok"] * 3


def test_a_failing_group_is_retried_key_by_key_and_only_the_culprit_fails(
    session_factory: sessionmaker[Session], engine: Engine, add_key: Any, user: User
) -> None:
    good_a, victim, good_b = (add_key(s) for s in (SECRET_A, SECRET_B, SECRET_C))
    with transaction(session_factory) as s:
        run_id = store.start_run(s, "sync")
    batch = [_fetched(i, user.id, [UsageRow(D1, "a/x", 1)]) for i in (good_a, victim, good_b)]
    # Deleted while its answer was on the way: its rows break the foreign key.
    with transaction(session_factory) as s:
        s.execute(delete(ApiKey).where(ApiKey.id == victim))
    commits = _count_commits(engine)

    outcomes = _store_keys(session_factory, run_id, batch, window_days(TODAY))

    by_id = {o.api_key_id: o for o in outcomes}
    assert {i: by_id[i].status for i in by_id} == {good_a: "ok", victim: "failed", good_b: "ok"}
    assert by_id[victim].reason == "unexpected"
    # The group's transaction was rolled back, then each key had its own.
    assert len(commits) == 2
    assert set(stored_usage_of(session_factory, good_a)) == {(D1, "a/x")}
    assert set(stored_usage_of(session_factory, good_b)) == {(D1, "a/x")}
    assert stored_usage_of(session_factory, victim) == {}
    results = _results(session_factory, run_id)
    assert {i: r.status for i, r in results.items()} == {good_a: "ok", good_b: "ok"}


def test_the_next_fetch_does_not_wait_for_the_previous_write(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
    engine: Engine,
) -> None:
    add_key(SECRET_A)
    add_key(SECRET_B)
    for s in (SECRET_A, SECRET_B):
        stub.answers[s] = [act(D1, "a/x")]
    second_fetch = threading.Event()
    stub.on_call = lambda key, _day: second_fetch.set() if len(stub.calls) == 2 else None
    seen_during_first_write: list[bool] = []

    def hold_first_commit(_conn: Any) -> None:
        # The first key's write commits only once the second key's fetch has started (or
        # after 10 s, if the fetch thread waits for this write: then the test fails).
        if not seen_during_first_write:
            seen_during_first_write.append(second_fetch.wait(timeout=10))

    # The run's own first transaction (start_run) commits before any fetch: hold the
    # commits only once the sync is fetching.
    stub_on_call = stub.on_call

    def on_call(key: str, day: dt.date | None) -> None:
        if len(stub.calls) == 1:
            event.listen(engine, "commit", hold_first_commit)
        stub_on_call(key, day)

    stub.on_call = on_call
    try:
        summary = _run(session_factory, Settings().replace("sync", concurrency=1), keyring, stub)
    finally:
        event.remove(engine, "commit", hold_first_commit)
    assert summary.keys_ok == 2
    assert seen_during_first_write == [True]


def test_a_row_that_appears_after_it_was_read_as_absent_is_upserted_instead(
    session_factory: sessionmaker[Session],
    add_key: Any,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = add_key(SECRET_A)
    other = add_key(SECRET_B)
    with transaction(session_factory) as s:
        run_id = store.start_run(s, "sync")
        store.write_key_days(s, key, [D1], [UsageRow(D1, "a/x", 1)])
    # As if another writer added a/x between the read and the write: the read sees nothing.
    real_read = store._stored_wire
    monkeypatch.setattr(
        store,
        "_stored_wire",
        lambda session, ids, days, sqlite_types: {
            i: {} for i in real_read(session, ids, days, sqlite_types)
        },
    )
    batch = [
        _fetched(key, user.id, [UsageRow(D1, "a/x", 7)]),
        _fetched(other, user.id, [UsageRow(D1, "a/x", 8)]),
    ]
    with structlog.testing.capture_logs() as logs:
        outcomes = _store_keys(session_factory, run_id, batch, window_days(TODAY))

    assert [(o.api_key_id, o.status) for o in outcomes] == [(key, "ok"), (other, "ok")]
    assert stored_usage_of(session_factory, key)[(D1, "a/x")][0] == 7
    assert stored_usage_of(session_factory, other)[(D1, "a/x")][0] == 8
    assert [e["event"] for e in logs if e["event"] == "group_commit_failed"] == [
        "group_commit_failed"
    ]


def test_a_writer_interrupted_with_fetches_queued_leaves_no_thread_behind(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    stub: StubOpenRouter,
    add_key: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = [SECRET_A, SECRET_B, SECRET_C, SECRET_D]
    for secret in secrets:
        add_key(secret)
        stub.answers[secret] = [act(D1, "a/x")]
    three_fetched = threading.Event()
    stub.on_call = lambda _key, _day: three_fetched.set() if len(stub.calls) == 3 else None

    def interrupted_write(*_args: Any) -> Any:
        # By now the fetch thread has queued the second answer and is blocked queueing the
        # third (the queue holds one answer at concurrency 1).
        three_fetched.wait(timeout=10)
        raise KeyboardInterrupt

    monkeypatch.setattr(sync_module, "_store_keys", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        _run(session_factory, Settings().replace("sync", concurrency=1), keyring, stub)

    assert three_fetched.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("sync-fetch")]
    assert len(stub.calls) == 3  # nothing more was fetched once the writer left
    with session_factory() as s:
        runs = s.execute(select(SyncRun)).scalars().all()
    assert [r.status for r in runs] == ["interrupted"]
