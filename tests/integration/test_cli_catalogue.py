"""The account commands end to end: `account-keys`, `reconcile`, a year-deep `backfill`, the
sync summary's and `status`'s warning for an ordinary key, `report --by key`.

In-process (the ``cli`` fixture) on the pinned day, against the fake OpenRouter's generated
account, on a migrated SQLite file; the levels' arithmetic on both databases is in
test_account_keys.py.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from worker.core.days import utc_today
from worker.store.db import create_db_engine, make_session_factory
from worker.store.models import UsageStats
from worker.testing.fake_account import FakeAccount, generate_account, replace_key
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.logs import json_events
from worker.vault import accounts
from worker.vault.crypto import Keyring

Cli = Callable[..., tuple[int, str, str]]
MANAGEMENT = "sk-or-v1-" + "m" * 64
ORDINARY = "sk-or-v1-" + "o" * 64


@pytest.fixture(autouse=True)
def configured(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, master_key: str, fake: Any
) -> None:
    for name, value in {
        "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
        "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": fake.base_url,
        "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
        "OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS": "2",
        "OPENROUTER_WATCHER_OPENROUTER_BACKOFF_INITIAL": "0.01",
        "OPENROUTER_WATCHER_OPENROUTER_BACKOFF_MAX": "0.02",
        "OPENROUTER_WATCHER_SYNC_HISTORY_DAYS": "0",
        "OPENROUTER_WATCHER_LOGGING_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def factory(sqlite_url: str) -> Iterator[Any]:
    engine = create_db_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def register(factory: Any, keyring: Keyring) -> Callable[..., int]:
    """register(secret, name) → the key's id, owned by ops@example.com."""
    accounts.add_user(factory, "ops@example.com")

    def add(secret: str, name: str) -> int:
        return accounts.add_key(factory, keyring, "ops@example.com", name, secret).id

    return add


@pytest.fixture
def account(fake: FakeOpenRouter) -> FakeAccount:
    """Three keys of 40 days each, the last one deleted; created on different days."""
    world = generate_account(today=fake.today, keys=3, days=40, models=2, deleted=1, seed=7)
    for n, key in enumerate(world.keys):
        replace_key(world, key.hash, created_at=f"2026-0{n + 1}-01T00:00:00Z")
    return fake.add_account(MANAGEMENT, world)


def test_account_keys_lists_the_catalogue_newest_first(
    cli: Cli, account: FakeAccount, register: Callable[..., int]
) -> None:
    code, out, _ = cli("account-keys")
    assert (code, out.strip()) == (
        0,
        "no account keys yet: they are listed by the first sync of a registered management "
        "key (see docs/accounts.md)",
    )
    management = register(MANAGEMENT, "acme")
    code, out, err = cli("sync")
    assert code == 0, out + err
    assert "account keys: 2 listed, 2 fetched, 0 unchanged, 0 failed" in out

    code, out, _ = cli("account-keys")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["ACCOUNT", "NAME", "HASH"]
    assert [line.split()[2:4] for line in lines[1:]] == [["key", "1"], ["key", "0"]]
    assert account.keys[1].hash[:12] + "…" in lines[1]

    code, out, _ = cli("account-keys", "--account", str(management), "--json")
    listed = json.loads(out)
    assert code == 0 and [k["hash"] for k in listed] == [k.hash for k in account.keys[1::-1]]
    assert set(listed[0]) == {
        "account_id", "account_name", "name", "hash", "disabled", "limit", "gone",
        "registered_key_id", "created_at", "last_seen_at", "fetch_error",
        # the live poll's figures and the last guard action (none before a poll)
        "today", "month", "limit_remaining", "limit_reset", "as_of", "last_guard_action",
    }  # fmt: skip
    assert (listed[0]["today"], listed[0]["as_of"], listed[0]["last_guard_action"]) == (
        None,
        None,
        None,
    )
    assert (listed[0]["account_id"], listed[0]["account_name"], listed[0]["gone"]) == (
        management,
        "acme",
        False,
    )
    code, _, err = cli("account-keys", "--account", "999")
    assert (code, err.strip()) == (
        2,
        "error: no API key with id 999: see `openrouter-watcher keys list`",
    )


def test_an_ordinary_key_without_its_account_warns_in_the_summary_and_status_and_exits_0(
    cli: Cli, fake: FakeOpenRouter, register: Callable[..., int]
) -> None:
    fake.add_key(MANAGEMENT, rows=[])
    fake.add_key(ORDINARY, management=False)
    register(MANAGEMENT, "acme")
    ordinary = register(ORDINARY, "app")
    code, out, err = cli("sync")
    assert code == 0, out + err
    assert "keys: 1 ok, 0 failed" in out
    (line,) = [x for x in out.splitlines() if x.startswith("warning:")]
    assert line.startswith(f"warning: key {ordinary} ('app', user 1): needs_management_key: ")
    assert "register the management key of its account" in line

    code, out, _ = cli("status")
    assert code == 0  # a warning does not make the worker unhealthy
    assert f"warning: key {ordinary} (app): an ordinary key cannot read its own history" in out
    code, out, _ = cli("status", "--json")
    document = json.loads(out)
    assert (code, document["healthy"], document["problems"]) == (0, True, [])
    assert [w.split(":")[0] for w in document["warnings"]] == [f"key {ordinary} (app)"]


def test_two_management_keys_of_one_account_are_flagged_in_status_and_the_sync_log(
    cli: Cli, fake: FakeOpenRouter, account: FakeAccount, register: Callable[..., int]
) -> None:
    """Both store the whole account's activity, so totals over both count it twice: never
    deleted on a guess, but said once per sync and in `status` until one of them goes."""
    twin = "sk-or-v1-" + "n" * 64
    fake.add_account(twin, account)
    elsewhere = "sk-or-v1-" + "e" * 64
    fake.add_account(elsewhere, generate_account(today=fake.today, keys=2, days=5, seed=8))
    first, second = register(MANAGEMENT, "acme"), register(twin, "acme-twin")
    register(elsewhere, "other")
    code, out, err = cli("sync")
    assert code == 0, out + err
    shared = [e for e in json_events(err) if e["event"] == "management_keys_share_an_account"]
    assert [(e["api_key_ids"], e["shared_keys"]) for e in shared] == [([first, second], 2)]

    expected = (
        f"keys {first} (acme) and {second} (acme-twin) are management keys of the same "
        "OpenRouter account (their key lists share 2 keys): both store its activity, so totals "
        "over both count it twice; keep one (`openrouter-watcher keys disable ID` stops the "
        "doubling from the next sync)"
    )
    code, out, _ = cli("status")
    assert code == 0  # a warning does not make the worker unhealthy
    assert f"warning: {expected}" in out.splitlines()
    code, out, _ = cli("status", "--json")
    document = json.loads(out)
    assert (document["healthy"], document["warnings"]) == (True, [expected])

    assert cli("keys", "disable", str(second))[0] == 0
    code, out, _ = cli("status", "--json")
    assert json.loads(out)["warnings"] == []


def test_reconcile_agrees_after_a_sync_and_reports_a_restated_day(
    cli: Cli, account: FakeAccount, register: Callable[..., int]
) -> None:
    register(MANAGEMENT, "acme")
    assert cli("sync")[0] == 0
    code, out, err = cli("reconcile", "--days", "7")
    assert code == 0, out + err
    assert out.strip().endswith("7 account-days compared, 0 differ by more than $0.000001")

    # OpenRouter restates one day of one key by two micro-dollars: analytics now disagree.
    day = (utc_today() - dt.timedelta(days=3)).isoformat()
    restated = next(r for r in account.keys[0].rows if r["date"].startswith(day))
    restated["usage"] = Decimal(str(restated["usage"])) + Decimal("0.000002")
    code, out, _ = cli("reconcile", "--days", "7")
    assert code == 1
    (line,) = [x for x in out.splitlines() if day in x]
    assert line.split()[-2:] == ["+0.000002000", "EXCEEDS"]
    code, out, _ = cli("reconcile", "--days", "7", "--json")
    document = json.loads(out)
    assert (code, document["exceeding"]) == (1, 1)
    (difference,) = document["accounts"][0]["differences"]
    assert (difference["date"], difference["difference"]) == (day, "0.000002000")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reconcile", "--days", "31"], "--days must be between 1 and 30"),
        (["reconcile", "--account", "2"], "key 2 is not an active management key"),
        (["reconcile", "--account", "99"], "no API key with id 99"),
        (["backfill", "--since", "2025-11-19"], "older than the 365 days OpenRouter reports"),
        (["backfill", "--days", "366"], "--days must be between 1 and 365"),
    ],
)
def test_bad_ranges_and_accounts_exit_2_before_any_request(
    cli: Cli,
    fake: FakeOpenRouter,
    register: Callable[..., int],
    args: list[str],
    message: str,
) -> None:
    fake.add_key(MANAGEMENT, rows=[])
    register(MANAGEMENT, "acme")
    register(ORDINARY, "app")
    code, _, err = cli(*args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert fake.request_count() == 0


def test_backfill_reaches_past_the_window_through_analytics(
    cli: Cli, factory: Any, account: FakeAccount, register: Callable[..., int]
) -> None:
    management = register(MANAGEMENT, "acme")
    assert cli("sync")[0] == 0
    first = utc_today() - dt.timedelta(days=40)
    last = utc_today() - dt.timedelta(days=31)
    code, out, err = cli("backfill", "--since", str(first), "--until", str(last), "--json")
    assert code == 0, out + err
    with factory() as session:
        stored = session.execute(
            select(UsageStats.date, UsageStats.cost, UsageStats.source).where(
                UsageStats.api_key_id == management, UsageStats.date <= last
            )
        ).all()
    expected: dict[dt.date, Decimal] = {}
    for key in account.keys:  # the deleted key's spend is the account's too
        for row in key.rows:
            day = dt.date.fromisoformat(row["date"][:10])
            if first <= day <= last:
                expected[day] = expected.get(day, Decimal(0)) + Decimal(str(row["usage"]))
    got: dict[dt.date, Decimal] = {}
    for day, cost, _source in stored:
        got[day] = got.get(day, Decimal(0)) + cost
    assert got == expected and len(got) == 10
    assert {source for *_, source in stored} == {"analytics"}


def test_report_by_key_adds_up_to_the_account_with_an_unattributed_row(
    cli: Cli, account: FakeAccount, register: Callable[..., int]
) -> None:
    register(MANAGEMENT, "acme")
    assert cli("sync")[0] == 0
    code, out, _ = cli("report", "--by", "key", "--format", "json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert set(rows[0]) == {
        "account_id", "account_name", "key_hash", "key_name", "requests", "tokens_input",
        "tokens_output", "tokens_reasoning", "cost", "byok_cost",
    }  # fmt: skip
    assert [r["key_name"] for r in rows][-1] == "(unattributed)" and rows[-1]["key_hash"] is None
    window = {(utc_today() - dt.timedelta(days=n)).isoformat() for n in range(1, 31)}
    deleted = sum(
        (Decimal(str(r["usage"])) for r in account.keys[2].rows if r["date"][:10] in window),
        Decimal(0),
    )
    assert Decimal(rows[-1]["cost"]) == deleted  # the deleted key's spend, nothing else
    totals = {}
    for by in ("account", "key", "day", "model", "user"):
        code, out, _ = cli("report", "--by", by, "--format", "json")
        totals[by] = json.loads(out)["total"]
    assert len({json.dumps(t, sort_keys=True) for t in totals.values()}) == 1, totals
