"""Every key of an account (issue 12), end to end: the registered management key's /activity,
its account's catalogue from /workspaces and /keys, each listed key's own history through
/activity?api_key_hash=, registered ordinary keys linked to their catalogue entry, and the
reports that read it all back without counting anything twice. The real client against the
fake OpenRouter on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import pytest
import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Sums, add_sums, stored_sums
from worker.config import Settings
from worker.core.days import DateRange, completed_window
from worker.core.usage import WriteCounts
from worker.reports.report import DIMENSIONS, UNATTRIBUTED, Totals, build_report
from worker.store.models import ApiKey, KeyUsageStats, SyncKeyResult, SyncRun
from worker.sync.run import run_sync
from worker.sync.summary import RunSummary
from worker.testing.activity_data import generate_activity
from worker.testing.clock import PinnedClock, noon
from worker.testing.fake_account import (
    DEFAULT_WORKSPACE,
    FakeAccount,
    generate_account,
    key_hash,
    replace_key,
)
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.testing.usage import catalogue_of, stored_key_usage_of, stored_usage_of
from worker.vault.crypto import Keyring

TODAY = dt.date(2026, 11, 26)
WINDOW = completed_window(TODAY)
MGMT_A = "sk-or-v1-mgmt-a-" + "1" * 48
MGMT_B = "sk-or-v1-mgmt-b-" + "2" * 48
OTHER_WORKSPACE = "11111111-1111-4111-8111-111111111111"

# --- fixtures and helpers ---------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("pinned_clock")


@pytest.fixture
def pinned_day() -> dt.date:
    """The worker's clock at noon UTC on TODAY; the fake's window ends before TODAY too."""
    return TODAY


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # No history import here (tests/integration/test_history_import.py has it).
    return settings.replace("sync", key_refresh_days=7).replace("openrouter", max_attempts=2)


@pytest.fixture
def register(register: Callable[..., int]) -> Callable[..., int]:
    """register(secret, name, email=…) → api_keys.id: Alice's key unless another owner is named.
    The fake learns the key separately (``fake.add_account`` / ``fake.add_key``)."""
    return functools.partial(register, email="alice@example.com")


def _sync(factory: sessionmaker[Session], settings: Settings, keyring: Keyring) -> RunSummary:
    return run_sync(factory, settings, keyring, trigger="sync")


def _sums(rows: Iterable[dict[str, Any]]) -> Sums:
    """What a correct sync stores for raw ActivityItems inside the window: per (day, model)."""
    return stored_sums(rows, *WINDOW)


_add = add_sums


def _account_sums(account: FakeAccount) -> Sums:
    """The account's /activity: every key's rows (deleted ones included) and unattributed."""
    return _add(*(_sums(k.rows) for k in account.keys), _sums(account.unattributed))


def _total(sums: Sums) -> Totals:
    return sum((Totals(*values) for values in sums.values()), Totals())


def _calls(fake: FakeOpenRouter, start: int = 0) -> list[tuple[str, dict[str, str]]]:
    return [(r.path.removeprefix("/api/v1"), r.query) for r in fake.requests[start:]]


def _per_key_fetches(fake: FakeOpenRouter, start: int = 0) -> list[str]:
    """The key hashes of the /activity?api_key_hash= requests since ``start``, sorted."""
    return sorted(
        query["api_key_hash"]
        for path, query in _calls(fake, start)
        if path == "/activity" and "api_key_hash" in query
    )


def _account_calls(fake: FakeOpenRouter, start: int = 0) -> list[tuple[str, dict[str, str]]]:
    """The account's own requests: /activity without a key hash, /workspaces, /keys pages."""
    return [
        (path, query)
        for path, query in _calls(fake, start)
        if path in ("/workspaces", "/keys") or (path == "/activity" and not query)
    ]


LISTING_CALLS = [
    ("/activity", {}),
    ("/workspaces", {"offset": "0", "limit": "100"}),
    ("/keys", {"include_disabled": "true", "offset": "0"}),
    ("/keys", {"include_disabled": "true", "offset": "3"}),  # only an empty page is the last
]


# --- 1. the first sync lists the account ------------------------------------------------------


def test_first_sync_lists_the_account_and_stores_each_key_and_the_account_exactly(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    register: Any,
) -> None:
    account = generate_account(today=TODAY, keys=3, days=6, models=2, seed=1)
    k0, k1, k2 = account.keys
    # Key 0 goes through two provider endpoints per model: its rows are summed per day.
    replace_key(account, k0.hash, rows=generate_activity(today=TODAY, days=6, models=2,
                                                         endpoints=2, seed=70))  # fmt: skip
    replace_key(account, k1.hash, disabled=True, limit=Decimal("25.5"))
    # Spend no listed key accounts for (e.g. keys deleted long ago).
    account.unattributed = generate_activity(today=TODAY, days=3, models=1, seed=71)
    fake.add_account(MGMT_A, account)
    mgmt = register(MGMT_A, "acme")

    summary = _sync(session_factory, settings, keyring)

    per_key = {k.hash: _sums(k.rows) for k in account.keys}
    assert sum(len(rows) for rows in per_key.values()) == 2 * 6 * 3
    assert (summary.status, summary.keys_ok, summary.keys_failed) == ("ok", 1, 0)
    [outcome] = summary.keys
    whole = _account_sums(account)
    assert (outcome.api_key_id, outcome.http_requests) == (mgmt, 4)
    assert outcome.counts == WriteCounts(inserted=len(whole))
    assert summary.catalogue.as_dict() == {
        "listed": 3,
        "fetched": 3,
        "unchanged": 0,
        "failed": 0,
        "linked": 0,
        "requests": 3,
        "rows": WriteCounts(inserted=2 * 6 * 3).as_dict(),
    }
    assert summary.requests == 7  # /activity, /workspaces, two /keys pages, one /activity per key
    assert _account_calls(fake) == LISTING_CALLS
    assert _per_key_fetches(fake) == sorted(per_key)

    # The management key's rows are the whole account's (unattributed spend included).
    assert stored_usage_of(session_factory, mgmt) == whole
    catalogue = catalogue_of(session_factory, mgmt)
    assert set(catalogue) == {k.hash for k in account.keys}
    for key in account.keys:
        entry = catalogue[key.hash]
        assert (entry.name, entry.label, entry.disabled, entry.limit) == (
            key.name,
            key.label,
            key.disabled,
            key.limit,
        )
        assert (entry.gone_at, entry.registered_key_id) == (None, None)
        assert entry.workspace_id == DEFAULT_WORKSPACE
        assert entry.first_seen_at == entry.last_seen_at
        assert entry.first_seen_at.date() == TODAY
        assert entry.fetched_usage == sum((Decimal(str(r["usage"])) for r in key.rows), Decimal(0))
        assert entry.fetch_error is None
        assert stored_key_usage_of(session_factory, entry.id) == per_key[key.hash]
    assert (catalogue[k1.hash].disabled, catalogue[k1.hash].limit) == (True, Decimal("25.5"))
    assert catalogue[k2.hash].limit is None
    with session_factory() as s:
        sources = set(s.scalars(select(KeyUsageStats.source)))
    assert sources == {"activity"}


# --- 2. what a re-sync costs ------------------------------------------------------------------


@pytest.fixture
def small_account(fake: FakeOpenRouter, register: Any) -> tuple[FakeAccount, int]:
    """Three keys, five days, two models; its management key registered."""
    account = fake.add_account(
        MGMT_A, generate_account(today=TODAY, keys=3, days=5, models=2, seed=2)
    )
    return account, register(MGMT_A, "acme")


def test_a_resync_costs_only_the_listing_until_a_key_spends_and_then_fetches_that_key_alone(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    small_account: tuple[FakeAccount, int],
) -> None:
    account, mgmt = small_account
    _sync(session_factory, settings, keyring)
    before = catalogue_of(session_factory, mgmt)
    start = len(fake.requests)

    # Nothing moved: the account's /activity and its listing, nothing per key.
    summary = _sync(session_factory, settings, keyring)

    assert _calls(fake, start) == LISTING_CALLS
    assert summary.requests == 4
    assert summary.catalogue.as_dict() == {
        "listed": 3,
        "fetched": 0,
        "unchanged": 3,
        "failed": 0,
        "linked": 0,
        "requests": 0,
        "rows": WriteCounts().as_dict(),
    }
    assert summary.counts == WriteCounts(unchanged=len(_account_sums(account)))
    after = catalogue_of(session_factory, mgmt)
    for key in account.keys:
        # Seen again (last_seen_at moves), first seen and last fetched as before.
        old, new = before[key.hash], after[key.hash]
        assert (new.first_seen_at, new.fetched_at) == (old.first_seen_at, old.fetched_at)
        assert new.last_seen_at > old.last_seen_at

    # One key spent on a new model: its usage in /keys moved, so it alone is fetched.
    moved = account.keys[1]
    extra = generate_activity(today=TODAY, days=2, models=["vendor/new-model"], seed=72)
    replace_key(account, moved.hash, rows=moved.rows + extra)
    start = len(fake.requests)

    summary = _sync(session_factory, settings, keyring)

    assert _per_key_fetches(fake, start) == [moved.hash]
    assert (summary.catalogue.fetched, summary.catalogue.unchanged) == (1, 2)
    assert summary.catalogue.counts == WriteCounts(inserted=2, unchanged=10)
    assert summary.requests == 5
    # The account's own answer has the new model's two days too.
    assert summary.counts == WriteCounts(inserted=2, unchanged=len(_account_sums(account)) - 2)
    assert stored_usage_of(session_factory, mgmt) == _account_sums(account)
    catalogue = catalogue_of(session_factory, mgmt)
    for key in account.keys:
        assert stored_key_usage_of(session_factory, catalogue[key.hash].id) == _sums(key.rows)


def test_keys_are_fetched_again_once_a_day_they_spent_completes_and_all_after_refresh_days(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    small_account: tuple[FakeAccount, int],
    pinned_clock: PinnedClock,
) -> None:
    account, _mgmt = small_account
    spender = account.keys[2]
    replace_key(account, spender.hash, spend_today=Decimal("0.5"))  # usage_daily > 0
    fetched: dict[int, list[str]] = {}
    for offset in (0, 1, 6, 7):  # key_refresh_days = 7
        today = TODAY + dt.timedelta(days=offset)
        pinned_clock.at(noon(today))
        fake.today = today
        start = len(fake.requests)
        summary = _sync(session_factory, settings, keyring)
        assert summary.status == "ok"
        fetched[offset] = _per_key_fetches(fake, start)
        assert summary.catalogue.fetched + summary.catalogue.unchanged == 3
        assert summary.catalogue.fetched == len(fetched[offset])
    everyone = sorted(k.hash for k in account.keys)
    assert fetched == {
        0: everyone,  # never fetched
        1: [spender.hash],  # it spent on the day it was fetched, and that day is complete
        6: [spender.hash],  # the others were fetched 6 days ago: < key_refresh_days
        7: everyone,  # 7 days: key_refresh_days, restatements included
    }


def test_a_run_stopped_during_the_per_key_fetches_is_interrupted_and_the_next_fetches_the_rest(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    small_account: tuple[FakeAccount, int],
) -> None:
    account, _mgmt = small_account
    stop = threading.Event()
    fake.on_request = lambda _path, query: stop.set() if "api_key_hash" in query else None
    one_at_a_time = settings.replace("sync", concurrency=1)

    stopped = run_sync(session_factory, one_at_a_time, keyring, stop=stop)
    first = _per_key_fetches(fake)
    fake.on_request = None
    start = len(fake.requests)
    summary = _sync(session_factory, settings, keyring)

    assert len(first) == 1 and stopped.catalogue.fetched == 1
    assert sorted(first + _per_key_fetches(fake, start)) == sorted(k.hash for k in account.keys)
    assert (summary.status, summary.catalogue.fetched, summary.catalogue.unchanged) == ("ok", 2, 1)
    assert stopped.status == "interrupted"


# --- 3. pages and workspaces ------------------------------------------------------------------


def test_keys_listed_over_several_pages_are_each_catalogued_once(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    register: Any,
) -> None:
    account = generate_account(today=TODAY, keys=5, days=1, models=1, seed=3)
    account.page_size = 2
    fake.add_account(MGMT_A, account)
    mgmt = register(MGMT_A, "acme")

    summary = _sync(session_factory, settings, keyring)

    offsets = [q["offset"] for path, q in _calls(fake) if path == "/keys"]
    assert offsets[:3] == ["0", "2", "4"]
    assert summary.catalogue.listed == 5
    assert sorted(catalogue_of(session_factory, mgmt)) == sorted(k.hash for k in account.keys)
    assert _per_key_fetches(fake) == sorted(k.hash for k in account.keys)


def test_keys_of_every_workspace_are_each_catalogued_once(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    register: Any,
) -> None:
    account = generate_account(today=TODAY, keys=4, days=1, models=1, seed=4)
    account.workspaces = [DEFAULT_WORKSPACE, OTHER_WORKSPACE]
    for key in account.keys[2:]:
        replace_key(account, key.hash, workspace_id=OTHER_WORKSPACE)
    fake.add_account(MGMT_A, account)
    mgmt = register(MGMT_A, "acme")

    summary = _sync(session_factory, settings, keyring)

    assert _account_calls(fake) == [
        ("/activity", {}),
        ("/workspaces", {"offset": "0", "limit": "100"}),
        ("/keys", {"include_disabled": "true", "offset": "0", "workspace_id": DEFAULT_WORKSPACE}),
        ("/keys", {"include_disabled": "true", "offset": "2", "workspace_id": DEFAULT_WORKSPACE}),
        ("/keys", {"include_disabled": "true", "offset": "0", "workspace_id": OTHER_WORKSPACE}),
        ("/keys", {"include_disabled": "true", "offset": "2", "workspace_id": OTHER_WORKSPACE}),
    ]
    assert (summary.catalogue.listed, summary.catalogue.fetched) == (4, 4)
    catalogue = catalogue_of(session_factory, mgmt)
    assert {h: e.workspace_id for h, e in catalogue.items()} == {
        k.hash: k.workspace_id or DEFAULT_WORKSPACE for k in account.keys
    }
    assert _per_key_fetches(fake) == sorted(k.hash for k in account.keys)
    assert summary.keys[0].http_requests == 6  # /activity, /workspaces, two /keys pages each


@pytest.mark.parametrize(("down", "requests"), [("/workspaces", 1 + 2), ("/keys", 1 + 1 + 2)])
def test_a_listing_outage_keeps_the_accounts_window_and_lists_its_keys_next_time(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    small_account: tuple[FakeAccount, int],
    down: str,
    requests: int,
) -> None:
    account, mgmt = small_account
    account.workspaces = [DEFAULT_WORKSPACE]

    def failing(path: str, _query: dict[str, str]) -> None:
        if path == down:
            fake.inject(MGMT_A, Fault(500))

    fake.on_request = failing

    with structlog.testing.capture_logs() as logs:
        summary = _sync(session_factory, settings, keyring)

    # "An account's sync should not fail for want of workspaces": its window is stored, and
    # none of its keys is listed (or marked gone) from half a listing.
    assert (summary.status, summary.keys_ok) == ("ok", 1)
    # /activity, (/workspaces,) the failing listing twice (500)
    assert summary.keys[0].http_requests == requests
    assert stored_usage_of(session_factory, mgmt) == _account_sums(account)
    assert catalogue_of(session_factory, mgmt) == {}
    assert _per_key_fetches(fake) == []
    assert [e["reason"] for e in logs if e["event"] == "account_keys_not_listed"] == [
        "upstream_unavailable"
    ]

    fake.on_request = None
    summary = _sync(session_factory, settings, keyring)
    assert (summary.status, summary.catalogue.listed, summary.catalogue.fetched) == ("ok", 3, 3)
    assert sorted(catalogue_of(session_factory, mgmt)) == sorted(k.hash for k in account.keys)

    # Down again, once the keys are catalogued: none of them is taken for deleted.
    fake.on_request = failing
    assert _sync(session_factory, settings, keyring).status == "ok"
    assert [e.gone_at for e in catalogue_of(session_factory, mgmt).values()] == [None] * 3


# --- 4. keys that are no longer listed --------------------------------------------------------


def test_a_key_no_longer_listed_is_kept_with_its_rows_and_comes_back_when_listed_again(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    small_account: tuple[FakeAccount, int],
) -> None:
    account, mgmt = small_account
    _sync(session_factory, settings, keyring)
    gone = account.keys[0]
    entry_id = catalogue_of(session_factory, mgmt)[gone.hash].id
    replace_key(account, gone.hash, deleted=True)
    start = len(fake.requests)

    summary = _sync(session_factory, settings, keyring)

    assert summary.status == "ok"
    assert summary.catalogue.listed == 2
    assert gone.hash not in _per_key_fetches(fake, start)
    entry = catalogue_of(session_factory, mgmt)[gone.hash]
    assert entry.id == entry_id
    assert entry.gone_at is not None and entry.gone_at.date() == TODAY
    assert stored_key_usage_of(session_factory, entry_id) == _sums(gone.rows)  # its history stays
    # OpenRouter still counts a deleted key's spend in the account's.
    assert stored_usage_of(session_factory, mgmt) == _account_sums(account)

    replace_key(account, gone.hash, deleted=False)
    summary = _sync(session_factory, settings, keyring)

    assert summary.catalogue.listed == 3
    back = catalogue_of(session_factory, mgmt)[gone.hash]
    assert (back.id, back.gone_at, back.first_seen_at) == (entry_id, None, entry.first_seen_at)
    assert back.last_seen_at > entry.last_seen_at
    assert stored_key_usage_of(session_factory, entry_id) == _sums(gone.rows)


# --- 5. registered ordinary keys --------------------------------------------------------------


def test_registered_ordinary_keys_are_linked_by_hash_or_else_by_label_and_keep_their_rows(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    small_account: tuple[FakeAccount, int],
    register: Any,
) -> None:
    account, mgmt = small_account
    by_hash, by_label = account.keys[0], account.keys[1]
    assert by_hash.secret is not None and by_hash.hash == key_hash(by_hash.secret)
    assert by_label.secret is not None
    replace_key(account, by_label.hash, hash="ab" * 32)  # an opaque id, not SHA-256 of the key
    ordinary = {
        by_hash.hash: register(by_hash.secret, "chatbot"),
        "ab" * 32: register(by_label.secret, "indexer"),
    }

    summary = _sync(session_factory, settings, keyring)

    assert (summary.status, summary.keys_ok, summary.catalogue.linked) == ("ok", 3, 2)
    by_id = {k.api_key_id: k for k in summary.keys}
    for key_id in ordinary.values():
        assert (by_id[key_id].status, by_id[key_id].reason) == ("ok", None)
        assert by_id[key_id].counts == WriteCounts(inserted=10)
    # GET /key once, for the label of the key whose listed hash is not its SHA-256.
    assert [path for path, _q in _calls(fake) if path == "/key"] == ["/key"]
    catalogue = catalogue_of(session_factory, mgmt)
    for listed_hash, key in ((by_hash.hash, by_hash), ("ab" * 32, by_label)):
        entry = catalogue[listed_hash]
        assert entry.registered_key_id == ordinary[listed_hash]
        # Its rows are the registered key's own (usage_stats), not a catalogued key's.
        assert stored_usage_of(session_factory, ordinary[listed_hash]) == _sums(key.rows)
        assert stored_key_usage_of(session_factory, entry.id) == {}
    assert stored_key_usage_of(session_factory, catalogue[account.keys[2].hash].id) == _sums(
        account.keys[2].rows
    )
    assert stored_usage_of(session_factory, mgmt) == _account_sums(account)
    with session_factory() as s:
        kinds = {s.get(ApiKey, key_id).kind for key_id in ordinary.values()}  # type: ignore[union-attr]
    assert kinds == {"ordinary"}

    # Known to be ordinary now: never asked for /activity itself again; still linked.
    start = len(fake.requests)
    summary = _sync(session_factory, settings, keyring)
    assert summary.status == "ok"
    assert _calls(fake, start) == LISTING_CALLS
    assert {
        h: e.registered_key_id
        for h, e in catalogue_of(session_factory, mgmt).items()
        if e.registered_key_id
    } == ordinary


def test_an_ordinary_key_without_its_management_key_is_a_warning_and_the_run_is_ok(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    small_account: tuple[FakeAccount, int],
    register: Any,
) -> None:
    _account, mgmt = small_account
    # Another account's key: its management key is known to OpenRouter, not registered here.
    other = fake.add_account(MGMT_B, generate_account(today=TODAY, keys=1, days=2, seed=9))
    assert other.keys[0].secret is not None
    orphan = register(other.keys[0].secret, "orphan")

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        summary = _sync(session_factory, settings, keyring)

    assert (summary.status, summary.keys_ok, summary.keys_failed) == ("ok", 1, 0)
    by_id = {k.api_key_id: k for k in summary.keys}
    assert (by_id[orphan].status, by_id[orphan].reason) == ("warning", "needs_management_key")
    assert "register the management key of its account" in (by_id[orphan].error or "")
    assert by_id[orphan].http_requests == 2  # its refused /activity, then /key for its label
    assert summary.catalogue.linked == 0
    assert stored_usage_of(session_factory, orphan) == {}
    assert all(e.registered_key_id is None for e in catalogue_of(session_factory, mgmt).values())
    with session_factory() as s:
        run = s.get(SyncRun, summary.run_id)
        assert run is not None and (run.status, run.keys_ok, run.keys_failed) == ("ok", 1, 0)
        result = s.scalar(
            select(SyncKeyResult).where(
                SyncKeyResult.run_id == summary.run_id, SyncKeyResult.api_key_id == orphan
            )
        )
        assert result is not None
        assert (result.status, result.reason) == ("warning", "needs_management_key")
    assert [e["api_key_id"] for e in logs if e["event"] == "key_needs_management_key"] == [orphan]


# --- 7. reports never count twice -------------------------------------------------------------


def test_every_report_grouping_has_the_accounts_total_and_by_key_attributes_the_rest(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    register: Any,
) -> None:
    # Alice's account: a key deleted before it was ever listed, spend no key accounts for,
    # and one of its keys registered by Alice as an ordinary key.
    first = generate_account(today=TODAY, keys=4, days=4, models=2, seed=11, deleted=1)
    first.unattributed = generate_activity(today=TODAY, days=2, models=1, seed=12)
    fake.add_account(MGMT_A, first)
    # Bob's account, a key of which is deleted after it was listed.
    second = fake.add_account(
        MGMT_B, generate_account(today=TODAY, keys=2, days=4, models=3, seed=13)
    )
    alice = register(MGMT_A, "alice's account")
    linked = register(first.keys[0].secret, "alice's chatbot")
    bob = register(MGMT_B, "bob's account", email="bob@example.com")
    assert _sync(session_factory, settings, keyring).status == "ok"
    replace_key(second, second.keys[1].hash, deleted=True)
    summary = _sync(session_factory, settings, keyring)
    assert (summary.status, summary.catalogue.linked) == ("ok", 0)
    assert catalogue_of(session_factory, bob)[second.keys[1].hash].gone_at is not None
    assert catalogue_of(session_factory, alice)[first.keys[0].hash].registered_key_id == linked

    totals = {alice: _total(_account_sums(first)), bob: _total(_account_sums(second))}
    grand = totals[alice] + totals[bob]
    window = DateRange(*WINDOW)
    with session_factory() as s:
        reports = {by: build_report(s, by, window) for by in DIMENSIONS}

    for by, report in reports.items():
        assert report.total == grand, by
    assert {r.group["account_id"]: r.totals for r in reports["account"].rows} == totals
    assert {r.group["user_email"]: r.totals for r in reports["user"].rows} == {
        "alice@example.com": totals[alice],
        "bob@example.com": totals[bob],
    }
    by_key = {(r.group["account_id"], r.group["key_hash"]): r for r in reports["key"].rows}
    expected: dict[tuple[int, str | None], Totals] = {}
    for account_id, account in ((alice, first), (bob, second)):
        listed_once = [k for k in account.keys if not (account is first and k.deleted)]
        for key in listed_once:
            expected[(account_id, key.hash)] = _total(_sums(key.rows))
        attributed = sum((expected[(account_id, k.hash)] for k in listed_once), Totals())
        expected[(account_id, None)] = totals[account_id] - attributed
    assert {pair: row.totals for pair, row in by_key.items()} == expected
    assert by_key[(alice, None)].group["key_name"] == UNATTRIBUTED
    # Alice's unattributed spend is her deleted key's and the unattributed rows'.
    assert expected[(alice, None)] == _total(
        _add(_sums(first.keys[3].rows), _sums(first.unattributed))
    )
    assert expected[(bob, None)] == Totals()
    # every key of an account by its OpenRouter name, registered or not
    assert by_key[(alice, first.keys[0].hash)].group["key_name"] == first.keys[0].name
