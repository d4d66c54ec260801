"""Alerts end to end: a changing fake world, the poll, the rules, and real local receivers
(an HTTP server for json://, an SMTP server for mailto://)."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from worker.alerts.deliver import Notifier
from worker.cli import main
from worker.config import Settings
from worker.config.rules import AlertRule, Channel
from worker.live.poll import run_poll
from worker.store.models import KIND_MANAGEMENT, AlertNotification, SyncKeyResult, SyncRun
from worker.testing.clock import PinnedClock, noon
from worker.testing.fake_account import FakeAccount, generate_account, replace_key
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.receivers import MailReceiver, WebhookReceiver
from worker.vault import accounts
from worker.vault.crypto import Keyring

NOON = noon(dt.date(2026, 11, 20))
MANAGEMENT = "sk-or-v1-alerts-management-" + "0" * 40
SECRET_PATH = "hook-Secret-Token-0123456789abcdef"


pytestmark = pytest.mark.usefixtures("pinned_clock")


@pytest.fixture
def pinned_day() -> dt.date:
    return NOON.date()


@pytest.fixture
def account(fake: FakeOpenRouter) -> FakeAccount:
    world = generate_account(today=NOON.date(), keys=2, days=0)
    world.total_credits = Decimal("100")
    return fake.add_account(MANAGEMENT, world)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def rule(name: str, metric: str, *thresholds: str, **options: Any) -> AlertRule:
    return AlertRule(
        name=name,
        metric=metric,
        direction=options.pop("direction", "above"),
        thresholds=tuple(Decimal(t) for t in thresholds),
        per=options.pop("per", "account"),
        notify=("ops",),
        **options,
    )


def settings_for(fake: FakeOpenRouter, hook: WebhookReceiver, *rules: AlertRule) -> Settings:
    settings = Settings().replace("openrouter", base_url=fake.base_url, max_attempts=1)
    channel = Channel(name="ops", url=hook.url(f"/{SECRET_PATH}"))
    return Settings(
        **{**settings.__dict__, "channels": (channel,), "alerts": rules}  # type: ignore[arg-type]
    )


class Waits(list[float]):
    """tenacity's sleeps, recorded instead of slept."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def poll(
    factory: sessionmaker[Session], settings: Settings, keyring: Keyring, waits: Waits | None = None
) -> Any:
    notifier = Notifier(
        settings.channels, settings.live, sleep=waits if waits is not None else Waits()
    )
    return run_poll(factory, settings, keyring, notifier=notifier)


def register_account(factory: sessionmaker[Session], keyring: Keyring) -> int:
    accounts.add_user(factory, "alice@example.com")
    return accounts.add_key(
        factory, keyring, "alice@example.com", "production", MANAGEMENT, KIND_MANAGEMENT
    ).id


def titles(hook: WebhookReceiver) -> list[str]:
    return [m["json"]["title"] for m in hook.received]


def test_thresholds_crossed_by_a_changing_world_fire_exactly_once_each(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    hook: WebhookReceiver,
    pinned_clock: PinnedClock,
) -> None:
    register_account(session_factory, keyring)
    key = account.keys[0]
    settings = settings_for(
        fake,
        hook,
        rule("daily-spend", "spend_today", "20", "40", per="key"),
        rule("low-credit", "balance", "50", direction="below"),
    )
    # (spend today of key 0, new alerts expected)
    steps = [("10", 0), ("25", 1), ("25", 0), ("45", 1), ("45", 0)]
    for spend, new in steps:
        before = len(hook.received)
        replace_key(account, key.hash, spend_today=Decimal(spend))
        summary = poll(session_factory, settings, keyring)
        assert len(summary.fired) == new and summary.delivery.sent == new, spend
        assert len(hook.received) == before + new
    assert titles(hook) == [
        '[openrouter-watcher] daily-spend: key "key 0" of account "production" spent $25.00 '
        "today (UTC), at or above $20.00",
        '[openrouter-watcher] daily-spend: key "key 0" of account "production" spent $45.00 '
        "today (UTC), at or above $40.00",
    ]
    body = hook.received[0]["json"]["message"]
    assert 'rule "daily-spend"' in body and "What to do:" in body
    assert "month to date: $25.00" in body.splitlines()[1]

    # The balance (credits - $45 used) was $55 so far. Down across $50 fires once; back up by
    # less than the 5 % hysteresis does not re-arm; above $52.50 re-arms; down again fires.
    for balance, new in [("49", 1), ("47", 0), ("51", 0), ("52.5", 0), ("53", 0), ("50", 1)]:
        account.total_credits = Decimal(balance) + Decimal(45)
        fired = poll(session_factory, settings, keyring).fired
        assert [f.rule for f in fired] == ["low-credit"] * new, balance

    # The next UTC day: the daily thresholds fire again, once.
    pinned_clock.at(NOON + dt.timedelta(days=1))
    replace_key(account, key.hash, spend_today=Decimal("21"))
    fired = poll(session_factory, settings, keyring).fired
    assert [(f.rule, f.threshold, f.period) for f in fired] == [
        ("daily-spend", Decimal(20), "2026-11-21")
    ]


def test_a_restart_fires_nothing_new(
    engine: Engine,
    db_url: str,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    hook: WebhookReceiver,
) -> None:
    from worker.store.db import create_db_engine, make_session_factory

    factory = make_session_factory(engine)
    register_account(factory, keyring)
    replace_key(account, account.keys[1].hash, spend_today=Decimal("30"))
    settings = settings_for(fake, hook, rule("daily", "spend_today", "20"))
    assert len(poll(factory, settings, keyring).fired) == 1
    engine.dispose()
    fresh = create_db_engine(db_url)  # a new process would see exactly this
    try:
        assert poll(make_session_factory(fresh), settings, keyring).fired == []
    finally:
        fresh.dispose()
    assert len(hook.received) == 1


def test_a_failing_receiver_is_retried_with_backoff_and_delivered_at_the_next_poll(
    sqlite_url: str,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    hook: WebhookReceiver,
) -> None:
    from worker.store.db import create_db_engine, make_session_factory

    engine = create_db_engine(sqlite_url)
    factory = make_session_factory(engine)
    register_account(factory, keyring)
    replace_key(account, account.keys[0].hash, spend_today=Decimal("30"))
    settings = settings_for(fake, hook, rule("daily", "spend_today", "20", "25"))
    hook.fail_next(4)  # more than one poll's 3 attempts
    waits = Waits()
    first = poll(factory, settings, keyring, waits)
    # The poll's figures and alerts stand; the first notification failed after 3 attempts
    # with exponential backoff, the second waits for the next poll (its channel is down).
    assert not first.failed and len(first.fired) == 2
    assert (first.delivery.sent, first.delivery.failed, first.delivery.deferred) == (0, 1, 1)
    assert hook.refused == 3 and waits == [0.5, 1.0]
    second = poll(factory, settings, keyring)
    assert second.fired == [] and (second.delivery.sent, second.delivery.failed) == (2, 0)
    assert len(hook.received) == 2 and hook.refused == 4
    with factory() as session:
        rows = session.scalars(select(AlertNotification).order_by(AlertNotification.id)).all()
        assert [(n.status, n.attempts) for n in rows] == [("sent", 5), ("sent", 1)]
        assert all(n.sent_at is not None and n.error is None for n in rows)
    engine.dispose()


def test_sync_failing_and_limit_used_percent(
    sqlite_url: str,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    hook: WebhookReceiver,
) -> None:
    from worker.store.db import create_db_engine, make_session_factory

    engine = create_db_engine(sqlite_url)
    factory = make_session_factory(engine)
    acct = register_account(factory, keyring)
    replace_key(account, account.keys[0].hash, limit=Decimal("10"), spend_today=Decimal("8.5"))
    settings = settings_for(
        fake,
        hook,
        rule("syncs", "sync_failing", "2", per="key"),
        rule("limit", "limit_used_percent", "50", "80", "95", per="key"),
    )
    with factory.begin() as session:
        for status in ("ok", "failed", "failed"):
            run = SyncRun(trigger="schedule", status="failed", started_at=NOON)
            session.add(run)
            session.flush()
            session.add(SyncKeyResult(run_id=run.id, api_key_id=acct, status=status))
    fired = poll(factory, settings, keyring).fired
    assert sorted((f.rule, f.threshold) for f in fired) == [
        ("limit", Decimal(50)),
        ("limit", Decimal(80)),
        ("syncs", Decimal(2)),
    ]
    assert poll(factory, settings, keyring).fired == []
    engine.dispose()


def test_the_daily_digest_goes_out_once_after_its_time(
    sqlite_url: str,
    keyring: Keyring,
    fake: FakeOpenRouter,
    account: FakeAccount,
    hook: WebhookReceiver,
    pinned_clock: PinnedClock,
) -> None:
    from worker.store.db import create_db_engine, make_session_factory
    from worker.store.models import UsageStats

    engine = create_db_engine(sqlite_url)
    factory = make_session_factory(engine)
    acct = register_account(factory, keyring)
    with factory.begin() as session:
        for n, cost in ((1, "12.5"), (2, "4"), (3, "6")):
            session.add(
                UsageStats(
                    api_key_id=acct,
                    date=NOON.date() - dt.timedelta(days=n),
                    model=f"model-{n}",
                    cost=Decimal(cost),
                )
            )
    settings = settings_for(fake, hook).replace("digest", channels=("ops",), at="12:00")
    pinned_clock.at(NOON - dt.timedelta(minutes=5))
    assert poll(factory, settings, keyring).fired == []
    pinned_clock.at(NOON)
    [digest] = poll(factory, settings, keyring).fired
    assert digest.rule == "(digest)"
    assert poll(factory, settings, keyring).fired == []
    [message] = hook.received
    assert message["json"]["title"] == (
        "[openrouter-watcher] spend on 2026-11-19 (UTC): $12.50 over 1 account(s)"
    )
    assert (
        'Account "production": $12.50 (875 % of the 7-day mean $1.43).'
        in (message["json"]["message"])
    )
    assert "top models: model-1 $12.50" in message["json"]["message"]
    engine.dispose()


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def cli_env(
    tmp_path: Path,
    sqlite_url: str,
    master_key: str,
    fake: FakeOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The worker's environment for in-process CLI calls; returns the config file to write."""
    for name in [v for v in __import__("os").environ if v.startswith("OPENROUTER_WATCHER_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("OPENROUTER_WATCHER_CONFIG", str(config))
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_OPENROUTER_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("OPENROUTER_WATCHER_ENCRYPTION_KEY", master_key)
    monkeypatch.setenv("OPENROUTER_WATCHER_LOGGING_FORMAT", "json")
    return config


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


WEBHOOK_RULE = """
[[channels]]
name = "webhook"
url_env = "WATCHER_WEBHOOK_URL"

[[alerts]]
name = "burn"
metric = "spend_today"
above = 20
per = "key"
notify = ["webhook"]
"""


def test_cli_poll_alerts_list_history_and_status_without_leaking_the_channel_url(
    cli_env: Path,
    sqlite_url: str,
    keyring: Keyring,
    master_key: str,
    account: FakeAccount,
    hook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    from worker.store.db import create_db_engine, make_session_factory

    engine = create_db_engine(sqlite_url)
    register_account(make_session_factory(engine), Keyring(base64.b64decode(master_key)))
    cli_env.write_text(WEBHOOK_RULE)
    monkeypatch.setenv("WATCHER_WEBHOOK_URL", hook.url(f"/{SECRET_PATH}"))
    replace_key(account, account.keys[0].hash, spend_today=Decimal("21.5"), limit=Decimal(50))

    code, out, err = run("poll")
    assert code == 0, err
    assert "alerts: 1 fired; notifications: 1 sent, 0 failed" in out
    [message] = hook.received
    assert message["path"] == f"/{SECRET_PATH}"

    code, again, _ = run("poll", "--json")
    document = json.loads(again)
    assert (code, document["status"], document["alerts_fired"]) == (0, "ok", [])
    assert document["requests"] == 4 and document["snapshots_written"] == 0
    code, listed, _ = run("alerts", "list", "--json")
    subjects = json.loads(listed)["subjects"]
    assert [(s["subject_name"], s["value"], s["firing"]) for s in subjects] == [
        ('key "key 0" of account "production"', "21.500000000", ["20"]),
        ('key "key 1" of account "production"', "0E-9" if False else "0.000000000", []),
    ]
    code, table, _ = run("alerts", "list")
    assert "fired at $20.00" in table
    code, history, _ = run("alerts", "history", "--json")
    [item] = json.loads(history)
    assert item["notifications"][0]["status"] == "sent"
    code, since, _ = run("alerts", "history", "--since", "2026-11-21")
    assert since.strip() == "no alert has fired since 2026-11-21"

    code, status, _ = run("status", "--json")
    [key] = json.loads(status)["keys"]
    assert key["live"]["today"] == "21.500000000" and key["live"]["balance"] is not None
    assert key["live"]["burn_rate_per_hour"] == "0.000000000"  # usage unchanged between polls
    code, table, _ = run("status")
    assert "TODAY" in table and "$21.50" in table and "RUNWAY" in table

    # The URL and its secret path never appear in output, logs or the database.
    seen = out + err + again + listed + history + status + table
    with engine.connect() as conn:
        for name in ("alert_events", "alert_notifications", "alert_states", "live_subjects"):
            seen += repr(conn.execute(text(f"SELECT * FROM {name}")).all())  # noqa: S608
    assert SECRET_PATH not in seen and str(hook.port) not in seen
    engine.dispose()


def test_alerts_test_delivers_by_mail_and_exits_1_when_delivery_fails(
    cli_env: Path, hook: WebhookReceiver
) -> None:
    with MailReceiver() as mail:
        cli_env.write_text(
            f'[[channels]]\nname = "mail"\nurl = "{mail.url()}"\n'
            f'[[channels]]\nname = "down"\nurl = "json://127.0.0.1:{hook.port}/x"\n'
            "[live]\ndelivery_attempts = 1\n"
        )
        code, out, err = run("alerts", "test", "mail")
        assert (code, out.strip()) == (0, "sent a test message to channel 'mail' (1 attempt(s))")
        [mailed] = mail.wait_for(1)
        assert "Subject: [openrouter-watcher] test message" in mailed
    hook.fail_next(1)
    code, out, err = run("alerts", "test", "down")
    assert code == 1 and err.startswith("error: channel 'down': ")
    assert "500" in err and "\n" not in err.strip()
    code, _, err = run("alerts", "test", "nowhere")
    assert code == 2 and err.strip() == "error: no channel named 'nowhere' (channels: mail, down)"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[[alerts]]\nname = "r1"\nmetric = "spend_yearly"\nabove = 1\nnotify = ["ops"]\n',
            "[[alerts]] rule 'r1' in {config}: metric 'spend_yearly' is not one of "
            "spend_today, spend_month, limit_used_percent, balance, runway_days, spike, "
            "sync_failing, limits_drift",
        ),
        (
            '[[alerts]]\nname = "r2"\nmetric = "balance"\nbelow = 5\nnotify = ["pager"]\n',
            "[[alerts]] rule 'r2' in {config}: notify names channel 'pager', which no "
            "[[channels]] table defines",
        ),
        (
            '[[channels]]\nname = "ops"\nurl = "nosuchservice://x/y"\n'
            '[[alerts]]\nname = "r3"\nmetric = "balance"\nbelow = 5\nnotify = ["ops"]\n',
            "[[channels]] 'ops': Apprise cannot use its URL (url, scheme nosuchservice://): "
            "see Apprise's list of services",
        ),
    ],
)
def test_a_bad_rule_or_channel_is_one_line_and_exit_2(
    cli_env: Path, toml: str, message: str
) -> None:
    cli_env.write_text(toml)
    code, out, err = run("poll")
    assert code == 2 and out == ""
    assert err == f"error: invalid configuration: {message.format(config=cli_env)}\n"
