"""End to end: the `sync` and `backfill` commands against a fake OpenRouter on 127.0.0.1.

The commands run in-process (the ``cli`` fixture) on the pinned day (``pinned_clock``), which
is also the fake's today. The database (a migrated SQLite file) is checked row by row against
the sums of the raw rows the fake serves.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.core.days import utc_today
from worker.store.db import create_db_engine, make_session_factory
from worker.store.locking import sync_lock
from worker.store.models import ApiKey, SyncKeyResult, SyncRun, UsageStats
from worker.testing.activity_data import expected_totals, generate_activity
from worker.testing.clock import PinnedClock
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.vault import accounts
from worker.vault.crypto import Keyring

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py
GOOD_A = "sk-or-v1-" + "1" * 64
GOOD_B = "sk-or-v1-" + "2" * 64
ORDINARY = "sk-or-v1-" + "3" * 64
DOWN = "sk-or-v1-" + "4" * 64


@pytest.fixture
def fake(pinned_clock: PinnedClock) -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=utc_today()) as server:
        assert server.today == pinned_clock.day
        yield server


@pytest.fixture(autouse=True)
def configured(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_url: str,
    master_key: str,
    fake: FakeOpenRouter,
) -> None:
    """Every command here: the test database and master key, the fake, short retries, JSON."""
    for name, value in {
        "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
        "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": fake.base_url,
        "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
        "OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS": "3",
        "OPENROUTER_WATCHER_OPENROUTER_BACKOFF_INITIAL": "0.01",
        "OPENROUTER_WATCHER_OPENROUTER_BACKOFF_MAX": "0.05",
        "OPENROUTER_WATCHER_LOGGING_FORMAT": "json",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def factory(sqlite_url: str) -> Iterator[Any]:
    engine = create_db_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def add_keys(factory: Any, keyring: Keyring) -> Any:
    """add_keys(secret, …) → ids: one user owning the keys, stored encrypted."""

    def add(*secrets: str) -> list[int]:
        accounts.add_user(factory, "ops@example.com")
        return [
            accounts.add_key(factory, keyring, "ops@example.com", f"key{i}", secret).id
            for i, secret in enumerate(secrets)
        ]

    return add


def stored(factory: Any, key_id: int) -> dict[tuple[dt.date, str], dict[str, Any]]:
    with factory() as session:
        rows = session.execute(select(UsageStats).where(UsageStats.api_key_id == key_id))
        return {
            (r.date, r.model): {
                "id": r.id,
                "requests": r.requests_count,
                "prompt_tokens": r.tokens_input,
                "completion_tokens": r.tokens_output,
                "reasoning_tokens": r.tokens_reasoning,
                "usage": r.cost,
                "byok_usage_inference": r.byok_cost,
            }
            for r in rows.scalars()
        }


def assert_rows_match(factory: Any, key_id: int, raw: list[dict[str, Any]]) -> None:
    """Every stored row equals the sum of its raw endpoint rows, and nothing else is stored."""
    want = expected_totals(raw)
    got = stored(factory, key_id)
    assert set(got) == set(want)
    for pair, expected in want.items():
        row = dict(got[pair])
        row.pop("id")
        assert row == expected, pair


def test_sync_twice_stores_exactly_the_expected_rows_once(
    cli: Cli, fake: FakeOpenRouter, factory: Any, add_keys: Any
) -> None:
    raw_a = generate_activity(today=fake.today, days=30, models=4, endpoints=3, seed=1)
    raw_b = generate_activity(today=fake.today, days=30, models=2, endpoints=1, seed=2)
    fake.add_key(GOOD_A, rows=raw_a)
    fake.add_key(GOOD_B, rows=raw_b)
    key_a, key_b = add_keys(GOOD_A, GOOD_B)

    code, first_out, first_err = cli("sync")
    assert code == 0, first_err
    assert "keys: 2 ok, 0 failed" in first_out
    assert "rows: 180 inserted, 0 updated, 0 unchanged, 0 deleted" in first_out
    # per management key: /activity, the account's /workspaces and /keys, and the first
    # import of its year of history through /analytics/query
    assert "requests: 8" in first_out
    assert_rows_match(factory, key_a, raw_a)
    assert_rows_match(factory, key_b, raw_b)
    before = stored(factory, key_a)

    code, second_out, second_err = cli("sync", "--json")
    assert code == 0, second_err
    summary = json.loads(second_out)
    assert (summary["trigger"], summary["status"], summary["keys_ok"]) == ("sync", "ok", 2)
    assert summary["rows"] == {
        "inserted": 0,
        "updated": 0,
        "unchanged": 180,
        "deleted": 0,
        "kept": 0,
    }
    assert summary["days"]["count"] == 30
    assert stored(factory, key_a) == before  # same ids, same values
    assert_rows_match(factory, key_b, raw_b)
    for secret in (GOOD_A, GOOD_B):
        assert secret not in first_out + first_err + second_out + second_err
    with factory() as session:
        runs = session.execute(select(SyncRun).order_by(SyncRun.id)).scalars().all()
    assert [(r.trigger, r.status, r.keys_ok, r.keys_failed) for r in runs] == [
        ("sync", "ok", 2, 0),
        ("sync", "ok", 2, 0),
    ]


def test_backfill_days_3_touches_only_those_days(
    cli: Cli, fake: FakeOpenRouter, factory: Any, add_keys: Any
) -> None:
    raw = generate_activity(today=fake.today, days=30, models=3, endpoints=2, seed=3)
    fake.add_key(GOOD_A, rows=raw)
    (key,) = add_keys(GOOD_A)
    assert cli("sync")[0] == 0
    before = stored(factory, key)

    # OpenRouter restates every day (costs doubled): a 3-day backfill takes only 3 of them.
    restated = [{**r, "usage": Decimal(str(r["usage"])) * 2} for r in raw]
    fake.set_rows(GOOD_A, restated)
    requests_before = fake.request_count(GOOD_A)
    code, out, err = cli("backfill", "--days", "3", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["trigger"] == "backfill"
    assert summary["days"]["count"] == 3
    # one /activity request per day, then the account's /workspaces and /keys
    assert fake.request_count(GOOD_A) - requests_before == 5
    assert summary["requests"] == 5

    last3 = {fake.today - dt.timedelta(days=n) for n in (1, 2, 3)}
    want = expected_totals(restated)
    after = stored(factory, key)
    assert set(after) == set(before)
    changed = 0
    for pair, row in after.items():
        if pair[0] in last3:
            assert row["usage"] == want[pair]["usage"]
            changed += row["usage"] != before[pair]["usage"]
        else:
            assert row == before[pair]
    assert summary["rows"]["updated"] == changed > 0
    assert summary["rows"]["unchanged"] == 3 * 3 - changed


def test_a_403_key_and_a_500_forever_key_are_reported_while_the_others_land(
    cli: Cli, fake: FakeOpenRouter, factory: Any, add_keys: Any
) -> None:
    raw = generate_activity(today=fake.today, days=30, models=2, seed=4)
    fake.add_key(GOOD_A, rows=raw)
    fake.add_key(ORDINARY, management=False)
    fake.add_key(DOWN, rows=raw)
    fake.fail_forever(DOWN, Fault(status=500))
    good, ordinary, down = add_keys(GOOD_A, ORDINARY, DOWN)

    code, out, err = cli("sync")
    assert code == 1, err  # the 500 key; the ordinary key is a warning, not a failure
    assert "keys: 1 ok, 1 failed" in out
    lines = out.splitlines()
    (line_403,) = [x for x in lines if x.startswith(f"warning: key {ordinary} ")]
    assert "needs_management_key" in line_403 and "management key of its account" in line_403
    (line_500,) = [x for x in lines if x.startswith(f"failed: key {down} ")]
    assert "upstream_unavailable" in line_500
    assert fake.request_count(DOWN) == 3  # retried up to max_attempts, then given up
    assert fake.request_count(ORDINARY) == 1  # a 403 is never retried

    assert_rows_match(factory, good, raw)
    assert stored(factory, ordinary) == {}
    assert stored(factory, down) == {}
    with factory() as session:
        results = {r.api_key_id: r for r in session.execute(select(SyncKeyResult)).scalars()}
        kinds = {k.id: k.kind for k in session.execute(select(ApiKey)).scalars()}
    assert {k: r.status for k, r in results.items()} == {
        good: "ok",
        ordinary: "warning",
        down: "failed",
    }
    assert results[down].http_requests == 3
    assert kinds == {good: "management", ordinary: "ordinary", down: None}
    events = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    failed = {e["api_key_id"]: e.get("reason") for e in events if e["event"] == "key_sync_failed"}
    assert failed == {down: "upstream_unavailable"}
    (needs,) = [e for e in events if e["event"] == "key_needs_management_key"]
    assert needs["api_key_id"] == ordinary
    assert [e["event"] for e in events].count("sync_finished") == 1
    for secret in (GOOD_A, ORDINARY, DOWN):
        assert secret not in out + err


@pytest.mark.parametrize(
    "args",
    [
        ["backfill", "--days", "366"],
        ["backfill", "--days", "0"],
        ["backfill", "--since", "2001-01-01"],
        ["backfill", "--since", "yesterday"],
        ["sync", "--key", "999"],
    ],
)
def test_bad_days_and_unknown_keys_exit_2_before_anything_is_fetched(
    cli: Cli, fake: FakeOpenRouter, factory: Any, add_keys: Any, args: list[str]
) -> None:
    fake.add_key(GOOD_A, rows=[])
    add_keys(GOOD_A)
    code, out, err = cli(*args)
    assert code == 2, out + err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert fake.request_count() == 0
    with factory() as session:
        assert isinstance(session, Session)
        assert session.execute(select(SyncRun)).scalars().all() == []


def test_sync_of_chosen_keys_prints_the_summary_and_marks_stale_runs_interrupted(
    cli: Cli, fake: FakeOpenRouter, factory: Any, add_keys: Any
) -> None:
    raw = generate_activity(today=fake.today, days=30, models=1, seed=5)
    fake.add_key(GOOD_A, rows=raw)
    fake.add_key(ORDINARY, management=False)
    good, ordinary = add_keys(GOOD_A, ORDINARY)
    with factory() as session, session.begin():
        session.add(SyncRun(trigger="schedule", status="running"))  # a run cut short earlier
    code, out, err = cli(
        "--log-level", "WARNING", "sync", "--key", str(good), "--key", str(ordinary)
    )
    assert code == 0, err  # an ordinary key without its account is a warning
    assert out.splitlines()[1:4] == [
        "keys: 1 ok, 0 failed",
        "rows: 30 inserted, 0 updated, 0 unchanged, 0 deleted",
        # the good key's /activity, /workspaces, /keys and /analytics/query; the ordinary
        # key's one refused /activity
        "requests: 5",
    ]
    assert f"warning: key {ordinary} ('key1', user 1): needs_management_key" in out
    with factory() as session:
        runs = session.execute(select(SyncRun).order_by(SyncRun.id)).scalars().all()
    assert [(r.trigger, r.status) for r in runs] == [
        ("schedule", "interrupted"),
        ("sync", "ok"),
    ]


def test_a_second_sync_while_one_holds_the_lock_fetches_nothing(
    cli: Cli, fake: FakeOpenRouter, sqlite_url: str, add_keys: Any
) -> None:
    fake.add_key(GOOD_A, rows=[])
    add_keys(GOOD_A)
    engine = create_db_engine(sqlite_url)
    try:
        with sync_lock(engine) as held:
            assert held
            code, _out, err = cli("--log-level", "WARNING", "backfill", "--days", "1")
    finally:
        engine.dispose()
    assert code == 1
    assert "another sync is running" in err.lower()
    assert fake.request_count() == 0
