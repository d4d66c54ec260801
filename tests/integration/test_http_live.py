"""The HTTP face over what the account catalogue and the live poll store, on SQLite and
PostgreSQL: /metrics' live series, the account keys, the alert history and the panels.

The world goes through the real path: two users' accounts on the fake OpenRouter, a sync (the
catalogue and each key's history), then a poll whose rules fire and whose deliveries go to a
local receiver and to a channel nobody answers. Alice also registers one of her account's keys
on its own, so an ordinary key that an account lists is there too. Tokens of both users prove
the isolation both ways; an admin sees everything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.alerts.deliver import Notifier
from worker.config import Settings
from worker.config.rules import AlertRule, Channel
from worker.core import days, render
from worker.daemon.http.context import HttpContext
from worker.live.poll import run_poll
from worker.reports.live import registered
from worker.store.db import make_session_factory
from worker.store.models import KIND_MANAGEMENT, KIND_ORDINARY
from worker.sync.run import run_sync
from worker.testing import loopback
from worker.testing.clock import PinnedClock, noon
from worker.testing.fake_account import FakeAccount, FakeAccountKey, generate_account, listing
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.postgres import free_port
from worker.testing.receivers import WebhookReceiver
from worker.testing.served import serving
from worker.vault import accounts
from worker.vault.crypto import Keyring

NOON = noon(dt.date(2026, 11, 20))
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
ALICE_ACCOUNT = "sk-or-v1-http-live-alice-" + "a" * 40
BOB_ACCOUNT = "sk-or-v1-http-live-bob-" + "b" * 42
DEAD_SECRET = "dead-Secret-Token-0123456789abcdef"
P = "openrouter_watcher_"
Labels = tuple[tuple[str, str], ...]


@dataclass
class World:
    url: str
    factory: sessionmaker[Session]
    ids: dict[str, int]  # registered key name -> id (production, chatbot-direct, research)
    keys: dict[str, FakeAccountKey]  # a key of an account, by its name on OpenRouter
    alice_account: FakeAccount
    bob_account: FakeAccount
    tokens: dict[str, str]  # email -> API token
    dead_url: str

    def get(self, path: str, email: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[email]}"} if email else {}
        return loopback.get(self.url + path, headers=headers, timeout=10)


def account_world(names: list[str], seed: int) -> FakeAccount:
    """An account whose keys have 10 days of history and these names (a name starting with
    ``old`` is a deleted key: its spend stays in the account's, unattributed)."""
    world = generate_account(today=NOON.date(), keys=len(names), days=10, models=2, seed=seed)
    for key, name in zip(world.keys, names, strict=True):
        key.name = name
        key.deleted = name.startswith("old")
    return world


def rule(name: str, metric: str, threshold: str, **options: Any) -> AlertRule:
    return AlertRule(
        name=name,
        metric=metric,
        direction=options.pop("direction", "above"),
        thresholds=(Decimal(threshold),),
        per=options.pop("per", "account"),
        notify=options.pop("notify", ("ops",)),
        **options,
    )


@pytest.fixture
def pinned_day() -> dt.date:
    return NOON.date()


@pytest.fixture
def world(engine: Engine, keyring: Keyring, pinned_clock: PinnedClock) -> Iterator[World]:
    with FakeOpenRouter(today=NOON.date()) as fake, WebhookReceiver() as hook:
        yield from _world(engine, keyring, fake, hook)


def _world(
    engine: Engine, keyring: Keyring, fake: FakeOpenRouter, hook: WebhookReceiver
) -> Iterator[World]:
    alice_account = fake.add_account(ALICE_ACCOUNT, account_world(["chatbot", "batch", "old"], 1))
    bob_account = fake.add_account(BOB_ACCOUNT, account_world(["research-bot"], 2))
    keys = {k.name: k for k in [*alice_account.keys, *bob_account.keys]}
    keys["chatbot"].spend_today, keys["chatbot"].limit = Decimal("4.5"), Decimal("5000")
    keys["batch"].spend_today = Decimal("0.75")
    keys["research-bot"].spend_today = Decimal("2")
    alice_account.total_credits = Decimal("6000")
    bob_account.total_credits = Decimal("9000")

    factory = make_session_factory(engine)
    for email in (ALICE, BOB, CAROL):
        accounts.add_user(factory, email)
    registrations = [
        (ALICE, "production", ALICE_ACCOUNT, KIND_MANAGEMENT),
        (ALICE, "chatbot-direct", str(keys["chatbot"].secret), KIND_ORDINARY),
        (BOB, "research", BOB_ACCOUNT, KIND_MANAGEMENT),
    ]
    ids = {
        name: accounts.add_key(factory, keyring, email, name, secret, kind).id
        for email, name, secret, kind in registrations
    }
    tokens = {e: accounts.create_token(factory, e, "api")[1] for e in (ALICE, BOB, CAROL)}

    dead_url = f"json://127.0.0.1:{free_port()}/{DEAD_SECRET}"
    settings = Settings().replace("openrouter", base_url=fake.base_url, max_attempts=1)
    settings = settings.replace("sync", history_days=0).replace("digest", channels=("ops",))
    settings = dataclasses.replace(
        settings,
        channels=(Channel(name="ops", url=hook.url("/ops")), Channel(name="dead", url=dead_url)),
        alerts=(
            rule("key-spend", "spend_today", "1", per="key", notify=("ops", "dead")),
            rule("low-balance", "balance", "6000", direction="below"),
        ),
    )
    summary = run_sync(factory, settings, keyring)
    assert summary.status == "ok", summary.as_dict()
    notifier = Notifier(settings.channels, settings.live, sleep=lambda _seconds: None)
    polled = run_poll(factory, settings, keyring, notifier=notifier)
    assert polled.status == "ok" and polled.delivery.failed == 1, polled.as_dict()

    ctx = HttpContext(
        settings=settings,
        session_factory=factory,
        scheduler_alive=lambda: True,
        clock=days.utc_now,
    )
    with serving(ctx) as url:
        yield World(url, factory, ids, keys, alice_account, bob_account, tokens, dead_url)


def samples(text: str) -> dict[str, dict[Labels, float]]:
    """Every sample: {name: {sorted labels: value}}."""
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def balance(account: FakeAccount) -> float:
    credits = account.credits()
    return float(credits["total_credits"] - credits["total_usage"])


def test_metrics_give_each_account_and_each_key_its_live_figures_never_mixed(
    world: World,
) -> None:
    scraped = world.get("/metrics")
    assert scraped.status_code == 200
    got = samples(scraped.text)
    production, research, direct = (
        world.ids[n] for n in ("production", "research", "chatbot-direct")
    )

    def account(key_id: int, name: str, kind: str = "management") -> Labels:
        return (("account", name), ("account_id", str(key_id)), ("kind", kind))

    def key(name: str, account_id: int, account_name: str) -> Labels:
        return (
            ("account", account_name),
            ("account_id", str(account_id)),
            ("key", name),
            ("key_hash", world.keys[name].hash[:12]),
            ("kind", "key"),
        )

    today = got[P + "account_live_spend_today_usd"]
    # the alias (alice's chatbot registered on its own) has no money series of its own: its
    # spend is the account's, so summing the family counts every dollar once
    assert today == {account(production, "production"): 5.25, account(research, "research"): 2.0}
    assert got[P + "key_live_spend_today_usd"] == {
        key("chatbot", production, "production"): 4.5,
        key("batch", production, "production"): 0.75,
        key("research-bot", research, "research"): 2.0,
    }
    month = got[P + "key_live_spend_month_usd"]
    assert month[key("batch", production, "production")] == float(
        listing(world.keys["batch"])["usage_monthly"]
    )
    assert got[P + "key_live_limit_remaining_usd"] == {
        key("chatbot", production, "production"): float(
            listing(world.keys["chatbot"])["limit_remaining"]
        )
    }
    assert got[P + "account_live_balance_usd"] == {
        account(production, "production"): balance(world.alice_account),
        account(research, "research"): balance(world.bob_account),
    }
    with world.factory() as session:
        live = registered(session, now=days.utc_now())
    runway = live[production].runway_days
    assert runway is not None and runway > 0
    assert got[P + "account_live_runway_days"][account(production, "production")] == float(runway)

    # every registered key's last poll, the alias's included; no poll failed
    polled = got[P + "account_last_poll_success_timestamp_seconds"]
    assert set(polled) == {
        account(production, "production"),
        account(research, "research"),
        account(direct, "chatbot-direct", "ordinary"),
    }
    assert all(abs(v - NOON.timestamp()) < 120 for v in polled.values())
    assert set(got[P + "account_last_poll_failed"].values()) == {0.0}

    # the two levels never share a family; each family holds one level's kinds
    for name, series in got.items():
        kinds = {dict(labels).get("kind") for labels in series}
        if kinds == {None}:
            # The daemon's own counters (key_syncs_total by result, …) carry no level; they
            # have series only once some test in this process ran a sync through them.
            continue
        if name.startswith(P + "key_"):
            assert kinds == {"key"}, name
        elif name.startswith(P + "account_"):
            assert kinds <= {"management", "ordinary", "unknown"}, name
    for secret in (ALICE_ACCOUNT, BOB_ACCOUNT, DEAD_SECRET, world.dead_url, ALICE, BOB):
        assert secret not in scraped.text
    assert world.keys["chatbot"].hash not in scraped.text  # a prefix only


def json_of(value: Any) -> Any:
    """``value`` as the API renders it, parsed."""
    return json.loads(render.to_json(value))


Cli = Callable[..., tuple[int, str, str]]


def error(response: httpx.Response, status: int, code: str, parameter: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["parameter"] == parameter


def cli_json(cli: Cli, engine: Engine, *argv: str, option: str = "--json") -> Any:
    """What the command prints as JSON, against the world's database."""
    url = engine.url.render_as_string(hide_password=False)
    code, out, err = cli(*argv, option, env={"OPENROUTER_WATCHER_DATABASE_URL": url})
    assert code == 0, err
    return json.loads(out)


def test_account_keys_are_the_cli_document_scoped_to_the_accounts_owner(
    world: World, engine: Engine, cli: Cli
) -> None:
    everything = cli_json(cli, engine, "account-keys")
    production, research = world.ids["production"], world.ids["research"]

    def of(*account_ids: int) -> list[Any]:
        return [k for k in everything if k["account_id"] in account_ids]

    mine = world.get("/api/v1/account-keys", ALICE)
    assert mine.status_code == 200
    assert mine.json() == of(production)
    assert {k["name"] for k in mine.json()} == {"chatbot", "batch"}
    assert world.get("/api/v1/account-keys", BOB).json() == of(research)
    assert world.get("/api/v1/account-keys", CAROL).json() == []  # no account of her own
    assert world.get(f"/api/v1/account-keys?account={production}", ALICE).json() == of(production)
    # the other user's account is "not found" both ways; so is an unknown one
    error(world.get(f"/api/v1/account-keys?account={research}", ALICE), 404, "not_found", "account")
    error(world.get(f"/api/v1/account-keys?account={production}", BOB), 404, "not_found", "account")
    error(world.get("/api/v1/account-keys?account=999", ALICE), 404, "not_found", "account")
    error(world.get("/api/v1/account-keys?account=x", ALICE), 400, "bad_parameter", "account")
    error(world.get("/api/v1/account-keys?user=" + BOB, ALICE), 400, "bad_parameter", "user")
    error(world.get("/api/v1/account-keys"), 401, "unauthorized", None)

    accounts.set_user_admin(world.factory, CAROL, True)
    assert world.get("/api/v1/account-keys", CAROL).json() == everything
    assert world.get(f"/api/v1/account-keys?account={research}", CAROL).json() == of(research)
    # hashes identify keys (report --by key shows them too); the keys themselves never appear
    text = world.get("/api/v1/account-keys", CAROL).text
    assert world.keys["chatbot"].hash in text
    for secret in (ALICE_ACCOUNT, BOB_ACCOUNT, str(world.keys["chatbot"].secret)):
        assert secret not in text


def test_alerts_are_the_cli_history_of_the_users_own_keys_and_accounts(
    world: World, engine: Engine, cli: Cli
) -> None:
    everything = cli_json(cli, engine, "alerts", "history")
    production, research = world.ids["production"], world.ids["research"]
    chatbot, bot = world.keys["chatbot"].hash, world.keys["research-bot"].hash
    assert [(a["rule"], a["subject"]) for a in everything] == [
        ("key-spend", f"key:{production}:{chatbot}"),
        ("key-spend", f"key:{research}:{bot}"),
        ("low-balance", f"account:{production}"),
        ("(digest)", "all"),
    ]

    def of(*rules_and_subjects: tuple[str, str]) -> list[Any]:
        return [a for a in everything if (a["rule"], a["subject"]) in rules_and_subjects]

    mine = world.get("/api/v1/alerts", ALICE)
    assert mine.status_code == 200
    assert mine.json() == of(
        ("key-spend", f"key:{production}:{chatbot}"), ("low-balance", f"account:{production}")
    )
    assert world.get("/api/v1/alerts", BOB).json() == of(("key-spend", f"key:{research}:{bot}"))
    assert world.get("/api/v1/alerts", CAROL).json() == []
    assert world.get("/api/v1/alerts?since=2026-11-20", BOB).json() == of(
        ("key-spend", f"key:{research}:{bot}")
    )
    assert world.get("/api/v1/alerts?since=2026-11-21", BOB).json() == []
    error(world.get("/api/v1/alerts?since=20-11-2026", BOB), 400, "bad_parameter", "since")
    error(world.get("/api/v1/alerts?user=" + ALICE, BOB), 400, "bad_parameter", "user")
    error(world.get("/api/v1/alerts"), 401, "unauthorized", None)

    accounts.set_user_admin(world.factory, CAROL, True)
    admin = world.get("/api/v1/alerts", CAROL)
    assert admin.json() == everything  # the digest of every account included
    # the failed channel is named, its URL (a secret) never appears
    dead = [n for a in admin.json() for n in a["notifications"] if n["channel"] == "dead"]
    assert [n["status"] for n in dead] == ["failed", "pending"]
    for secret in (world.dead_url, DEAD_SECRET, ALICE_ACCOUNT, BOB_ACCOUNT):
        assert secret not in admin.text


def test_usage_by_account_and_by_key_hold_only_the_users_own_accounts(
    world: World, engine: Engine, cli: Cli
) -> None:
    production, research = world.ids["production"], world.ids["research"]
    direct = world.ids["chatbot-direct"]
    for email in (ALICE, BOB):
        for by in ("account", "key"):
            expected = cli_json(
                cli, engine, "report", "--by", by, "--user", email, option="--format=json"
            )
            got = world.get(f"/api/v1/usage?by={by}", email)
            assert got.status_code == 200
            assert got.json() == expected, (email, by)
        by_account = world.get("/api/v1/usage?by=account", email).json()
        by_key = world.get("/api/v1/usage?by=key", email).json()
        assert by_key["total"] == by_account["total"]  # keys + unattributed = the accounts

    alice = world.get("/api/v1/usage?by=key", ALICE).json()["rows"]
    bob = world.get("/api/v1/usage?by=key", BOB).json()["rows"]
    assert {(r["account_id"], r["key_name"]) for r in alice} == {
        (production, "chatbot"),  # every key of an account goes by its OpenRouter name
        (production, "batch"),
        (production, "(unattributed)"),  # the deleted key's spend
    }
    assert {(r["account_id"], r["key_name"]) for r in bob} == {
        (research, "research-bot"),
        (research, "(unattributed)"),
    }
    assert [
        r["account_name"] for r in world.get("/api/v1/usage?by=account", ALICE).json()["rows"]
    ] == ["production"]
    # one of her accounts, or her own ordinary key (its rows only); never bob's
    one = world.get(f"/api/v1/usage?by=key&key={production}", ALICE).json()
    assert one["total"] == world.get("/api/v1/usage?by=account", ALICE).json()["total"]
    own = world.get(f"/api/v1/usage?by=key&key={direct}", ALICE).json()["rows"]
    assert [r["key_hash"] for r in own] == [world.keys["chatbot"].hash]
    error(world.get(f"/api/v1/usage?by=key&key={research}", ALICE), 404, "not_found", "key")
    error(world.get(f"/api/v1/usage?by=key&key={production}", BOB), 404, "not_found", "key")
    error(world.get(f"/api/v1/usage?by=key&user={ALICE}", BOB), 404, "not_found", "user")


def test_dashboard_panels_show_the_users_accounts_now_its_keys_today_and_its_alerts(
    world: World,
) -> None:
    alice = world.get("/dashboard/panels", ALICE)
    assert alice.status_code == 200
    page = alice.text
    assert 'id="today" data-usd="5.250000000"' in page  # the alias is not counted twice
    assert "$5.25" in page and "$5,318.61" in page  # today, and production's balance
    assert 'id="accounts-now"' in page and 'id="keys-today"' in page and 'id="alerts"' in page
    assert "low-balance" in page and "key-spend" in page and "dead failed" in page
    for other in ("research", "$8,700.39", BOB, "(digest)"):
        assert other not in page

    bob = world.get("/dashboard/panels", BOB).text
    assert 'id="today" data-usd="2.000000000"' in bob
    assert "research-bot" in bob and "low-balance" not in bob
    for other in ("production", "chatbot", "$5,318.61", ALICE):
        assert other not in bob
    for text in (page, bob):
        assert world.dead_url not in text and DEAD_SECRET not in text
