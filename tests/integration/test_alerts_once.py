"""Once in total, whichever process evaluates or sends (two daemons around a failover): the
alert states' version counter, and the outbox's claim before a send. On SQLite and PostgreSQL.

tests/faults/test_ha.py shows the same with real daemons; here the interleavings that a
failover makes rare are made to happen."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from tests.integration.test_alerts import MANAGEMENT, Waits, register_account, rule, settings_for
from worker.alerts.deliver import Notifier, claim_timeout, drain
from worker.alerts.evaluate import evaluate_all
from worker.config import Settings
from worker.core.days import utc_now
from worker.live.poll import run_poll
from worker.store import alerts as store
from worker.store.models import AlertEvent, AlertNotification
from worker.testing.clock import noon
from worker.testing.fake_account import FakeAccount, generate_account, replace_key
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.receivers import WebhookReceiver
from worker.vault.crypto import Keyring

NOON = noon(dt.date(2026, 11, 20))
pytestmark = pytest.mark.usefixtures("pinned_clock")


@pytest.fixture
def pinned_day() -> dt.date:
    return NOON.date()


@pytest.fixture
def account(fake: FakeOpenRouter) -> FakeAccount:
    return fake.add_account(MANAGEMENT, generate_account(today=NOON.date(), keys=2, days=0))


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def _poll(factory: sessionmaker[Session], settings: Settings, keyring: Keyring) -> object:
    notifier = Notifier(settings.channels, settings.live, sleep=Waits())
    return run_poll(factory, settings, keyring, notifier=notifier)


def _events(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(AlertEvent)) or 0)


def test_two_evaluations_of_the_same_state_at_once_fire_it_once(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    hook: WebhookReceiver,
) -> None:
    register_account(session_factory, keyring)
    key = account.keys[0]
    replace_key(account, key.hash, spend_today=Decimal("5"))
    watched = settings_for(fake, hook, rule("daily", "spend_today", "20", per="key"))
    _poll(session_factory, watched, keyring)  # the states exist, below the threshold
    replace_key(account, key.hash, spend_today=Decimal("30"))
    _poll(session_factory, settings_for(fake, hook), keyring)  # the figures move past it
    assert _events(session_factory) == 0

    # The second evaluator read the states before the first committed (the other daemon).
    late = session_factory()
    read_before = store.states(late, ["daily"])  # held: the session keeps what it read
    with session_factory.begin() as first:
        assert len(evaluate_all(first, watched, utc_now())) == 1
    # It fires too, by what it read; but its UPDATE finds the state moved on (the flush
    # before its event is stored), and its transaction is rolled back whole.
    with pytest.raises(StaleDataError):
        evaluate_all(late, watched, utc_now())
        late.commit()
    late.close()
    assert len(read_before) == 2  # one state per key of the account

    assert _events(session_factory) == 1
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(AlertNotification)) == 1


def test_a_poll_whose_evaluation_lost_to_another_keeps_its_figures_and_delivers(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    hook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_account(session_factory, keyring)
    settings = settings_for(fake, hook, rule("daily", "spend_today", "0.001", per="key"))

    def lost(*_args: object) -> list[object]:
        raise StaleDataError("UPDATE statement on table 'alert_states' expected to update 1 row")

    monkeypatch.setattr("worker.live.poll.evaluate_all", lost)
    summary = _poll(session_factory, settings, keyring)

    assert summary.status == "ok" and summary.fired == [] and summary.snapshots > 0  # type: ignore[attr-defined]
    assert _events(session_factory) == 0


def _queued(factory: sessionmaker[Session]) -> int:
    """One fired alert with one pending notification to the ``ops`` channel."""
    now = utc_now()
    with factory.begin() as session:
        event = AlertEvent(
            rule="daily", metric="spend_today", subject="key:1:x", subject_name="k",
            threshold="20", value=Decimal(30), period="2026-11-20", fired_at=now,
            title="[openrouter-watcher] spent", body="body",
        )  # fmt: skip
        store.add_event(session, event, ["ops"], now)
        return int(session.scalar(select(AlertNotification.id)) or 0)


def test_a_notification_another_sender_claimed_is_not_sent_again(
    session_factory: sessionmaker[Session], fake: FakeOpenRouter, hook: WebhookReceiver
) -> None:
    settings = settings_for(fake, hook)
    notification = _queued(session_factory)
    with session_factory.begin() as session:
        assert store.claim(session, notification, utc_now())  # the other sender's
    with session_factory.begin() as session:
        assert not store.claim(session, notification, utc_now())  # one claim only

    counts = drain(session_factory, settings, Notifier(settings.channels, settings.live))

    assert counts.sent == 0 and hook.received == []
    with session_factory() as session:
        assert session.scalar(select(AlertNotification.status)) == "sending"


def test_a_claim_whose_sender_died_is_sent_once_after_the_claim_timeout(
    session_factory: sessionmaker[Session], fake: FakeOpenRouter, hook: WebhookReceiver
) -> None:
    settings = settings_for(fake, hook)
    notification = _queued(session_factory)
    died = utc_now() - claim_timeout(settings.live) - dt.timedelta(seconds=1)
    with session_factory.begin() as session:
        assert store.claim(session, notification, died)  # and never recorded a result

    counts = drain(session_factory, settings, Notifier(settings.channels, settings.live))
    again = drain(session_factory, settings, Notifier(settings.channels, settings.live))

    assert counts.sent == 1 and again.sent == 0 and len(hook.received) == 1
    with session_factory() as session:
        row = session.scalars(select(AlertNotification)).one()
        assert (row.status, row.attempts) == ("sent", 1)


def test_a_claim_younger_than_the_timeout_is_left_to_its_sender(
    session_factory: sessionmaker[Session], fake: FakeOpenRouter, hook: WebhookReceiver
) -> None:
    settings = settings_for(fake, hook)
    notification = _queued(session_factory)
    with session_factory.begin() as session:
        store.claim(session, notification, utc_now())
        session.execute(
            update(AlertNotification).values(
                last_attempt_at=utc_now() - claim_timeout(settings.live) + dt.timedelta(seconds=5)
            )
        )
    assert drain(session_factory, settings, Notifier(settings.channels, settings.live)).sent == 0
    assert hook.received == []
