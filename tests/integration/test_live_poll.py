"""The live poll against the fake OpenRouter on 127.0.0.1: what it asks, what it stores, the
figures it derives, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.live.poll import locked_poll, run_poll
from worker.reports.live import figures, registered
from worker.store.locking import poll_lock
from worker.store.models import (
    KIND_MANAGEMENT,
    KIND_ORDINARY,
    LiveSnapshot,
    LiveSubject,
    UsageStats,
)
from worker.testing.clock import PinnedClock, noon
from worker.testing.fake_account import FakeAccount, generate_account, replace_key
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.vault import accounts
from worker.vault.crypto import Keyring

NOON = noon(dt.date(2026, 11, 20))
MANAGEMENT = "sk-or-v1-live-management-" + "0" * 40


pytestmark = pytest.mark.usefixtures("pinned_clock")


@pytest.fixture
def pinned_day() -> dt.date:
    return NOON.date()


@pytest.fixture
def account(fake: FakeOpenRouter) -> FakeAccount:
    world = generate_account(today=NOON.date(), keys=3, days=0)
    world.total_credits = Decimal("100")
    return fake.add_account(MANAGEMENT, world)


def settings_for(fake: FakeOpenRouter) -> Settings:
    return Settings().replace("openrouter", base_url=fake.base_url, max_attempts=1)


def register(
    factory: sessionmaker[Session], keyring: Keyring, *keys: tuple[str, str, str]
) -> list[int]:
    """(name, secret, kind) → registered key ids of one user."""
    accounts.add_user(factory, "alice@example.com")
    return [
        accounts.add_key(factory, keyring, "alice@example.com", name, secret, kind).id
        for name, secret, kind in keys
    ]


def test_a_poll_stores_the_account_and_its_keys_and_only_what_changed(
    engine: Engine,
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
) -> None:
    [acct] = register(session_factory, keyring, ("production", MANAGEMENT, KIND_MANAGEMENT))
    replace_key(account, account.keys[0].hash, spend_today=Decimal("1.25"), limit=Decimal("10"))
    replace_key(account, account.keys[1].hash, spend_today=Decimal("0.5"))
    settings = settings_for(fake)

    first = locked_poll(engine, settings, keyring)
    assert first is not None and not first.failed
    # /credits, /workspaces (refused: none), one /keys page and the empty one that ends it
    assert first.requests == 4 == fake.request_count()
    assert (first.subjects, first.snapshots) == (4, 4)

    with session_factory() as session:
        found = {f.name: f for f in figures(session)}
    acct_figures = found["production"]
    assert acct_figures.scope == "account" and acct_figures.api_key_id == acct
    assert acct_figures.today == Decimal("1.75")
    assert acct_figures.balance == Decimal("100") - Decimal("1.75")
    key0 = found["key 0"]
    assert (key0.today, key0.limit, key0.limit_remaining) == (
        Decimal("1.25"),
        Decimal("10"),
        Decimal("8.75"),
    )
    assert key0.limit_used_percent == Decimal("12.50")
    assert key0.account == "production" and key0.user == "alice@example.com"

    # Nothing changed: nothing written. One key spends more: it and the account change.
    assert locked_poll(engine, settings, keyring).snapshots == 0  # type: ignore[union-attr]
    replace_key(account, account.keys[2].hash, spend_today=Decimal("3"))
    assert locked_poll(engine, settings, keyring).snapshots == 2  # type: ignore[union-attr]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(LiveSnapshot)) == 6
        assert registered(session)[acct].today == Decimal("4.75")


def test_a_deleted_key_leaves_the_account_and_a_renamed_one_keeps_its_history(
    engine: Engine,
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
) -> None:
    [acct] = register(session_factory, keyring, ("production", MANAGEMENT, KIND_MANAGEMENT))
    replace_key(account, account.keys[2].hash, spend_today=Decimal("2"))
    settings = settings_for(fake)
    run_poll(session_factory, settings, keyring)
    replace_key(account, account.keys[2].hash, deleted=True)
    replace_key(account, account.keys[0].hash, name="renamed")
    run_poll(session_factory, settings, keyring)
    with session_factory() as session:
        names = sorted(f.name for f in figures(session))
        assert names == ["key 1", "production", "renamed"]
        assert session.scalar(select(func.count()).select_from(LiveSubject)) == 4
        assert registered(session)[acct].today == Decimal(0)


def test_ordinary_keys_cost_one_request_unless_an_account_lists_them(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
) -> None:
    listed = account.keys[1]
    assert listed.secret is not None
    replace_key(account, listed.hash, spend_today=Decimal("0.75"))
    loner = "sk-or-v1-loner-" + "7" * 50
    fake.add_key(loner, management=False, limit=Decimal("5"))
    ids = register(
        session_factory,
        keyring,
        ("production", MANAGEMENT, KIND_MANAGEMENT),
        ("listed", listed.secret, KIND_ORDINARY),
        ("loner", loner, KIND_ORDINARY),
    )
    summary = run_poll(session_factory, settings_for(fake), keyring)
    assert summary.requests == 5  # the account's 4, and /key for the key no account lists
    assert fake.request_count(listed.secret) == 0
    assert [s.scope for s in summary.sources] == ["account", "alias", "key"]
    with session_factory() as session:
        mine = registered(session)
        assert mine[ids[1]].today == Decimal("0.75")
        assert mine[ids[2]].limit_remaining == Decimal("5")
        # The listed key is counted once: as the account's key, not again as an alias.
        assert [f.name for f in figures(session)].count("key 1") == 1


def test_a_failed_account_is_reported_and_keeps_its_last_figures(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
) -> None:
    from worker.testing.fake_openrouter import Fault

    [acct] = register(session_factory, keyring, ("production", MANAGEMENT, KIND_MANAGEMENT))
    settings = settings_for(fake)
    first = run_poll(session_factory, settings, keyring)
    fake.inject(MANAGEMENT, Fault(status=401))
    summary = run_poll(session_factory, settings, keyring)
    assert [(s.status, s.reason) for s in summary.failed] == [("failed", "unauthorized")]
    with session_factory() as session:
        mine = registered(session)[acct]
        assert mine.as_of == first.started_at  # the last successful poll's figures stay
        assert mine.poll_error is not None and "401" in mine.poll_error
        assert mine.balance == Decimal("100")


def test_status_says_when_a_keys_last_poll_failed(
    db_url: str,
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    cli: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.testing.fake_openrouter import Fault

    [acct] = register(session_factory, keyring, ("production", MANAGEMENT, KIND_MANAGEMENT))
    settings = settings_for(fake)
    run_poll(session_factory, settings, keyring)
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", db_url)
    assert "last poll failed" not in cli("status")[1]
    fake.inject(MANAGEMENT, Fault(status=401))
    run_poll(session_factory, settings, keyring)
    code, out, _ = cli("status")
    assert code == 0  # live figures never change the health check
    [line] = [line for line in out.splitlines() if "last poll failed" in line]
    assert line.startswith(f"key {acct} last poll failed: ") and "401" in line
    assert line.endswith("(figures as of 2026-11-20 12:00 UTC)")


def test_two_polls_never_run_at_once(
    engine: Engine, session_factory: sessionmaker[Session], keyring: Keyring, fake: FakeOpenRouter
) -> None:
    with poll_lock(engine) as held:
        assert held is not None
        assert locked_poll(engine, settings_for(fake), keyring) is None
    assert fake.request_count() == 0


def test_derived_figures_runway_projection_burn_and_spike(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    pinned_clock: PinnedClock,
) -> None:
    """A week of polls: the account's mean comes from the stored history, a key's from its
    snapshots; runway, projection, burn rate and spike follow from them."""
    [acct] = register(session_factory, keyring, ("production", MANAGEMENT, KIND_MANAGEMENT))
    key = account.keys[0]
    replace_key(account, key.hash, limit=Decimal("100"))
    settings = settings_for(fake)
    start = dt.datetime(2026, 11, 10, 23, 0, tzinfo=dt.UTC)
    spent = Decimal(0)
    # $2 a day for 10 days, seen by a poll at 23:00 each day (and one just after midnight).
    for day in range(10):
        spent += Decimal(2)
        key.rows = [{"usage": spent, "byok_usage_inference": 0}]
        replace_key(account, key.hash, spend_today=Decimal(0))
        pinned_clock.at(start + dt.timedelta(days=day))
        run_poll(session_factory, settings, keyring)
    with session_factory.begin() as session:
        for n in range(1, 8):  # the account's stored history: $3 a day for the last 7 days
            session.add(
                UsageStats(
                    api_key_id=acct,
                    date=NOON.date() - dt.timedelta(days=n),
                    model="m",
                    cost=Decimal(3),
                )
            )
    replace_key(account, key.hash, spend_today=Decimal("1.5"))
    pinned_clock.at(NOON)
    run_poll(session_factory, settings, keyring)
    with session_factory() as session:
        found = {f.name: f for f in figures(session, now=NOON)}
    key_figures, acct_figures = found["key 0"], found["production"]
    assert key_figures.mean_daily == Decimal("2")
    assert key_figures.runway_days == ((Decimal(100) - key_figures.usage) / 2).quantize(
        Decimal("0.1")
    )
    assert key_figures.spike_percent == Decimal("150.00")  # $1.50 by noon against $1 expected
    assert acct_figures.mean_daily == Decimal("3")
    assert acct_figures.runway_days == (acct_figures.balance / 3).quantize(Decimal("0.1"))
    # Month to date + the mean over the 10.5 days left in November.
    assert acct_figures.month_end_projection == acct_figures.month + Decimal("31.5")
    # No snapshot in the last 3 hours but this poll's: the $1.50 since the snapshot before
    # the window counts as spent within it.
    # (the clock runs on from NOON while the poll runs: the window is a hair over 3 hours)
    assert key_figures.burn_rate_per_hour is not None
    assert key_figures.burn_rate_per_hour.quantize(Decimal("0.01")) == Decimal("0.50")


def test_old_snapshots_are_pruned_but_every_figure_since_stays_computable(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    pinned_clock: PinnedClock,
) -> None:
    register(session_factory, keyring, ("production", MANAGEMENT, KIND_MANAGEMENT))
    key = account.keys[0]
    settings = settings_for(fake).replace("live", retention_days=2)
    pruned = 0
    for day in range(5):  # a changed figure every day at noon; the last poll at 11:00
        pinned_clock.at(NOON + dt.timedelta(days=day, hours=-1 if day == 4 else 0))
        replace_key(account, key.hash, spend_today=Decimal(day + 1))
        # Summed over the polls: the day-3 poll's cutoff (day 1 noon plus the milliseconds
        # that poll took) may already fall after the day-1 snapshot, which then prunes day 0.
        pruned += run_poll(session_factory, settings, keyring).pruned
    assert pruned > 0
    with session_factory() as session:
        subject = session.scalars(select(LiveSubject).where(LiveSubject.key_hash == key.hash)).one()
        kept = session.scalars(
            select(LiveSnapshot.taken_at)
            .where(LiveSnapshot.subject_id == subject.id)
            .order_by(LiveSnapshot.taken_at)
        ).all()
    # The last 2 days' snapshots (since the 22nd 11:00), plus the newest one before them
    # (the 21st's: still true at the cutoff); the 20th's is gone.
    assert [t.date().day for t in kept] == [21, 22, 23, 24]


@pytest.mark.parametrize(
    ("minutes", "seconds", "every"), [(10, 0, 600), (10, 30, 30), (0, 5, 5), (0, 0, 0)]
)
def test_the_daemon_polls_every_interval_seconds_instead_of_the_minutes_when_set(
    minutes: int, seconds: int, every: int, engine: Engine, keyring: Keyring
) -> None:
    from worker.daemon.jobs import LivePoller

    settings = Settings().replace("live", interval_minutes=minutes, interval_seconds=seconds)
    poller = LivePoller(settings, engine, keyring, threading.Event())
    assert poller.interval_seconds == every
