"""Guards that act, end to end on SQLite and PostgreSQL: the fake OpenRouter (which keeps what
PATCH /keys/{hash} sets), the real poll, rules with ``act``, dry-run and enforce, restore at the
next period, a person's own change, refusals and outages, and exactly one action per rule, key
and period however many polls and restarts."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.config.limits import LimitTable
from worker.config.rules import AlertRule, Channel
from worker.live.poll import PollSummary, run_poll
from worker.reports.limits import drifted
from worker.store import guards as store
from worker.store.models import AlertEvent, GuardAction
from worker.sync.run import run_sync
from worker.testing.clock import PinnedClock, noon
from worker.testing.fake_account import FakeAccount, FakeAccountKey, generate_account, key_hash
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.testing.receivers import WebhookReceiver
from worker.vault.crypto import Keyring

DAY = dt.date(2026, 11, 20)
MANAGEMENT = "sk-or-v1-guards-management-" + "0" * 40


@pytest.fixture
def pinned_day() -> dt.date:
    return DAY


@pytest.fixture
def account(fake: FakeOpenRouter) -> FakeAccount:
    world = generate_account(today=DAY, keys=3, days=0)
    names, spent_today = ("ci-main", "ci-docs", "prod-bot"), ("7.5", "0.5", "9")
    for key, name, spent in zip(world.keys, names, spent_today, strict=True):
        key.name, key.spend_today = name, Decimal(spent)
    world.keys[0].limit = Decimal(100)  # monthly, as keys with a limit are by default
    return fake.add_account(MANAGEMENT, world)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def mgmt(register: Callable[..., int], account: FakeAccount) -> int:
    return register(MANAGEMENT, "production")


def guard_rule(act: str = "cap", **options: Any) -> AlertRule:
    return AlertRule(
        name=options.pop("name", "runaway-ci"),
        metric=options.pop("metric", "spend_today"),
        direction="above",
        thresholds=(Decimal(2), Decimal(5)),
        per="key",
        notify=("ops",),
        keys=options.pop("keys", ("ci-main", "ci-docs")),
        act=act,
        **options,
    )


def configured(
    settings: Settings, hook: WebhookReceiver, *rules: AlertRule, mode: str = "enforce"
) -> Settings:
    channel = Channel(name="ops", url=hook.url("/hook"))
    base = settings.replace("guards", mode=mode).replace("live", delivery_attempts=1)
    return dataclasses.replace(base, channels=(channel,), alerts=rules)


def poll(factory: sessionmaker[Session], settings: Settings, keyring: Keyring) -> PollSummary:
    return run_poll(factory, settings, keyring)


def patches(fake: FakeOpenRouter) -> list[int]:
    return [r.status for r in fake.requests if r.path.startswith("/api/v1/keys/")]


def actions(factory: sessionmaker[Session]) -> list[store.Action]:
    with factory() as session:
        return store.history(session)


def events(factory: sessionmaker[Session]) -> list[AlertEvent]:
    with factory() as session:
        return list(session.scalars(select(AlertEvent).order_by(AlertEvent.id)))


def test_dry_run_plans_records_and_announces_but_sends_nothing(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    summary = poll(
        session_factory, configured(settings, hook, guard_rule(), mode="dry-run"), keyring
    )

    assert summary.actions_planned == 1
    (action,) = actions(session_factory)
    assert (action.status, action.mode, action.key_name, action.action) == (
        "planned",
        "dry-run",
        "ci-main",
        "cap",
    )
    assert action.wanted == {"limit": Decimal("7.5"), "limit_reset": "daily"}
    assert action.before["limit"] == Decimal(100) and action.before["limit_reset"] == "monthly"
    assert patches(fake) == []
    assert account.keys[0].limit == Decimal(100)
    # ci-main passed 2 and 5: two alerts, the second (the last threshold) says what it would do.
    fired = [e for e in events(session_factory) if e.rule == "runaway-ci"]
    assert [e.threshold for e in fired] == ["2", "5"]
    assert fired[1].title.endswith("[guard: would cap]")
    assert 'would cap to $7.50 a day key "ci-main"' in fired[1].body
    delivered = [r["json"] for r in hook.received if "would cap" in r["json"]["title"]]
    assert len(delivered) == 1 and "[guards] mode" in delivered[0]["message"]


def test_enforce_caps_the_key_once_and_the_alert_says_so(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    configured_settings = configured(settings, hook, guard_rule())
    first = poll(session_factory, configured_settings, keyring)

    assert (first.actions_planned, first.guards.sent) == (1, 1)
    key = account.keys[0]
    assert (key.limit, key.limit_reset) == (Decimal("7.5"), "daily")  # what it spent today
    assert patches(fake) == [200]
    (action,) = actions(session_factory)
    assert action.status == "sent" and action.after["limit"] == Decimal("7.5")
    alert = next(e for e in events(session_factory) if e.threshold == "5")
    assert alert.title.endswith("[guard: capped]")
    assert 'Guard: capped key "ci-main"' in alert.body
    delivered = [r["json"] for r in hook.received if "[guard: capped]" in r["json"]["title"]]
    assert len(delivered) == 1 and "Guard: capped" in delivered[0]["message"]

    # Polls later (a restart: new settings and client objects), nothing more is done or sent.
    for _ in range(2):
        again = poll(session_factory, configured(settings, hook, guard_rule()), keyring)
        assert (again.actions_planned, again.guards.sent) == (0, 0)
    assert patches(fake) == [200]
    assert len(actions(session_factory)) == 1


def test_disable_and_restore_at_the_next_period(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
    pinned_clock: PinnedClock,
) -> None:
    rule = guard_rule("disable")
    poll(session_factory, configured(settings, hook, rule), keyring)
    assert account.keys[0].disabled is True
    # The same day: still disabled, nothing restored.
    poll(session_factory, configured(settings, hook, rule), keyring)
    assert account.keys[0].disabled is True

    pinned_clock.at(noon(DAY + dt.timedelta(days=1)))
    fake.today = DAY + dt.timedelta(days=1)
    for key in account.keys:
        key.spend_today = Decimal(0)
    summary = poll(session_factory, configured(settings, hook, rule), keyring)

    assert summary.guards.restored == 1
    assert account.keys[0].disabled is False
    (action,) = actions(session_factory)
    assert action.status == "restored" and action.restored_at is not None
    assert patches(fake) == [200, 200]


def test_a_person_s_change_is_never_undone(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
    pinned_clock: PinnedClock,
) -> None:
    rule = guard_rule("cap")
    poll(session_factory, configured(settings, hook, rule), keyring)
    # A person disables the key the watcher capped, in OpenRouter's UI.
    key = account.keys[0]
    key.disabled = True
    key.updated_at = (noon(DAY) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

    pinned_clock.at(noon(DAY + dt.timedelta(days=1)))
    fake.today = DAY + dt.timedelta(days=1)
    summary = poll(session_factory, configured(settings, hook, rule), keyring)

    assert (summary.guards.restored, summary.guards.kept) == (0, 1)
    assert (key.disabled, key.limit, key.limit_reset) == (True, Decimal("7.5"), "daily")
    (action,) = [a for a in actions(session_factory) if a.period == DAY.isoformat()]
    assert action.status == "kept" and "changed it" in (action.error or "")
    assert patches(fake) == [200]


def test_restore_manual_keeps_the_change_until_undo(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
    pinned_clock: PinnedClock,
) -> None:
    rule = guard_rule("cap", restore="manual")
    poll(session_factory, configured(settings, hook, rule), keyring)
    pinned_clock.at(noon(DAY + dt.timedelta(days=3)))
    fake.today = DAY + dt.timedelta(days=3)
    poll(session_factory, configured(settings, hook, rule), keyring)
    assert account.keys[0].limit == Decimal("7.5")
    assert actions(session_factory)[0].status == "sent"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_change_fails_once_with_its_reason_and_is_never_retried(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
    status: int,
) -> None:
    fake.fail_changes(Fault(status=status))
    rule = guard_rule("disable")
    summary = poll(session_factory, configured(settings, hook, rule), keyring)

    assert summary.guards.failed == 1
    (action,) = actions(session_factory)
    assert action.status == "failed" and (action.error or "").startswith("change_refused")
    alert = next(e for e in events(session_factory) if e.threshold == "5")
    assert alert.title.endswith("[guard: disable failed]") and "could not disable" in alert.body
    for _ in range(2):
        poll(session_factory, configured(settings, hook, rule), keyring)
    assert patches(fake) == [status]  # one attempt: a 4xx is never retried, nor asked again
    assert account.keys[0].disabled is False


def test_an_outage_leaves_the_change_pending_and_it_is_sent_once_later(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    fake.fail_changes(Fault(status=503))
    rule = guard_rule("disable")
    first = poll(session_factory, configured(settings, hook, rule), keyring)
    assert (first.guards.waiting, first.guards.sent) == (1, 0)
    assert actions(session_factory)[0].status == "pending"
    assert patches(fake) == [503, 503, 503]  # the retry policy's three attempts

    fake.fail_changes(None)
    second = poll(session_factory, configured(settings, hook, rule), keyring)
    third = poll(session_factory, configured(settings, hook, rule), keyring)

    assert (second.guards.sent, third.guards.sent) == (1, 0)
    assert account.keys[0].disabled is True
    assert patches(fake) == [503, 503, 503, 200]
    assert actions(session_factory)[0].attempts == 4


def test_a_change_sent_but_not_recorded_is_recorded_once_without_sending_again(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    rule = guard_rule("disable")
    fake.fail_changes(Fault(status=503))
    poll(session_factory, configured(settings, hook, rule), keyring)  # pending
    # The PATCH went through, but the process died before recording it.
    fake.fail_changes(None)
    account.keys[0].disabled = True
    summary = poll(session_factory, configured(settings, hook, rule), keyring)

    assert (summary.guards.already, summary.guards.sent) == (1, 0)
    assert patches(fake) == [503, 503, 503]  # nothing sent twice
    assert actions(session_factory)[0].status == "sent"


def test_never_a_registered_management_key_nor_a_key_out_of_scope(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    # OpenRouter lists the management key itself among the account's keys, spending a lot.
    account.keys.append(
        FakeAccountKey(
            hash=key_hash(MANAGEMENT), name="ci-admin", label="sk-or-v1-adm...000",
            spend_today=Decimal(50),
        )
    )  # fmt: skip
    rule = guard_rule("disable", keys=("ci-main", "ci-admin"))
    poll(session_factory, configured(settings, hook, rule), keyring)

    by_key = {a.key_name: a for a in actions(session_factory)}
    assert by_key["ci-admin"].status == "failed"
    assert "registered management key" in (by_key["ci-admin"].error or "")
    assert "prod-bot" not in by_key  # it spent $9, but no rule's scope names it
    assert [k.disabled for k in account.keys] == [True, False, False, False]
    assert patches(fake) == [200]


def test_the_database_keeps_one_action_per_rule_key_and_period(
    session_factory: sessionmaker[Session], mgmt: int
) -> None:
    values = dict(
        rule="r", source="alert", account_id=mgmt, key_hash="h", key_name="k", action="disable",
        period="2026-11-20", mode="enforce", status="pending", restore="next_period",
        before="{}", wanted="{}", attempts=0, created_at=noon(DAY),
    )  # fmt: skip
    with session_factory() as session, session.begin():
        first = store.add(session, **values)
        again = store.add(session, **{**values, "status": "planned"})
        other_day = store.add(session, **{**values, "period": "2026-11-21"})
    assert first is not None and again is None and other_day is not None
    with session_factory() as session:
        assert len(session.scalars(select(GuardAction)).all()) == 2


LIMIT_CI = (LimitTable("[[limits]] #1 (keys 'ci-*')", ("ci-*",), (), Decimal(25), "daily", None),)


def test_the_daemon_applies_the_declared_limits_only_when_told_and_once(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    reporting = dataclasses.replace(configured(settings, hook), limits=LIMIT_CI)
    assert run_sync(session_factory, reporting, keyring).status == "ok"  # the catalogue
    poll(session_factory, reporting, keyring)
    with session_factory() as session:
        drift = drifted(session, LIMIT_CI)
    assert sorted(d.key for d in drift) == ["ci-docs", "ci-main"]  # reported, not applied
    assert actions(session_factory) == [] and patches(fake) == []

    applying = reporting.replace("guards", apply_limits=True)
    summary = poll(session_factory, applying, keyring)
    assert (summary.actions_planned, summary.guards.sent) == (2, 2)
    assert [(k.limit, k.limit_reset) for k in account.keys[:2]] == [(Decimal(25), "daily")] * 2
    poll(session_factory, applying, keyring)  # nothing drifted any more: nothing more
    assert patches(fake) == [200, 200]
    with session_factory() as session:
        assert drifted(session, LIMIT_CI) == []

    # A person raises ci-main's limit again; the next poll puts it back, once.
    account.keys[0].limit = Decimal(500)
    poll(session_factory, applying, keyring)
    poll(session_factory, applying, keyring)
    assert account.keys[0].limit == Decimal(25) and patches(fake) == [200, 200, 200]


def test_a_refused_limit_is_not_asked_again_every_poll(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    fake.fail_changes(Fault(status=403))
    applying = dataclasses.replace(
        configured(settings, hook).replace("guards", apply_limits=True), limits=LIMIT_CI
    )
    for _ in range(3):
        poll(session_factory, applying, keyring)
    assert patches(fake) == [403, 403]  # one per drifted key, then never again
    assert {a.status for a in actions(session_factory)} == {"failed"}


def test_in_dry_run_the_daemon_plans_the_limits_once_and_sends_nothing(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    planning = dataclasses.replace(
        configured(settings, hook, mode="dry-run").replace("guards", apply_limits=True),
        limits=LIMIT_CI,
    )
    for _ in range(3):
        poll(session_factory, planning, keyring)
    assert [(a.key_name, a.status) for a in actions(session_factory)] == [
        ("ci-main", "planned"),
        ("ci-docs", "planned"),
    ]
    assert patches(fake) == []


def test_limits_drift_is_an_alert_metric_per_account_and_per_key(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    mgmt: int,
    hook: WebhookReceiver,
) -> None:
    per_account = AlertRule(
        name="drift", metric="limits_drift", direction="above", thresholds=(Decimal(1),),
        per="account", notify=("ops",),
    )  # fmt: skip
    per_key = dataclasses.replace(per_account, name="drift-key", per="key")
    watching = dataclasses.replace(
        configured(settings, hook, per_account, per_key, mode="dry-run"), limits=LIMIT_CI
    )
    assert run_sync(session_factory, watching, keyring).status == "ok"
    poll(session_factory, watching, keyring)

    fired = {(e.rule, e.subject_name, e.value) for e in events(session_factory)}
    assert ("drift", 'account "production"', Decimal(2)) in fired  # ci-main and ci-docs
    assert {name for rule, name, _ in fired if rule == "drift-key"} == {
        'key "ci-main" of account "production"',
        'key "ci-docs" of account "production"',
    }
    assert any("[[limits]]" in r["json"]["title"] for r in hook.received)
