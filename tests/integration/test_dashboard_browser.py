"""The dashboard in a real headless browser: Playwright driving Debian's Chromium.

A seeded database (two users, three accounts, 60 days of realistic usage over ten models, two
keys of one account with their share of it, a live poll of each account 5 minutes ago, and
alerts), the application on a real uvicorn, and a page that must refuse a bad token, then show
the chart, the right totals, today's spend, balances, runway and the last alerts for a good
one, only its own user's, on a desktop and on a phone, without contacting any other host.
Screenshots go to ``build/`` for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from pathlib import Path

from playwright.sync_api import Page, sync_playwright
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.core import render
from worker.daemon.http.context import HttpContext
from worker.store import alerts, snapshots
from worker.store.db import create_db_engine, make_session_factory
from worker.store.models import (
    KIND_MANAGEMENT,
    AccountKey,
    AlertEvent,
    ApiKey,
    KeyUsageStats,
    SyncKeyResult,
    SyncRun,
    UsageStats,
    to_money,
)
from worker.store.snapshots import SELF, Observation, Source
from worker.testing.activity_data import expected_totals, generate_activity
from worker.testing.clock import noon
from worker.testing.served import serving
from worker.vault import accounts

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the rest keeps it from calling home on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BUILD = Path(__file__).resolve().parents[2] / "build"
TODAY = dt.date(2026, 11, 20)
NOW = noon(TODAY)
ALICE, BOB = "alice@example.com", "bob@example.com"
# name: (owner, models, seed, scale); alice's ten models make a top 8 and an "other"
KEYS = {
    "production": (ALICE, 10, 1, Decimal("1")),
    "staging": (ALICE, 3, 2, Decimal("0.2")),
    "research": (BOB, 4, 3, Decimal("0.5")),
}
# production's keys on OpenRouter and their share of its spend (the rest is unattributed)
SHARES = {"chatbot": Decimal("0.6"), "batch-jobs": Decimal("0.3")}
POLLED = NOW - dt.timedelta(minutes=5)
# each account at the last poll: (today, balance, {key: (today, limit left)})
LIVE = {
    "production": (
        Decimal("12.5"),
        Decimal("842.1"),
        {"chatbot": (Decimal("9.25"), Decimal("40")), "batch-jobs": (Decimal("3.25"), None)},
    ),
    "staging": (Decimal("0.4"), Decimal("55"), {}),
    "research": (Decimal("99"), Decimal("1"), {}),
}
# (user's account, rule, metric, value): what fired this morning
ALERTS = [
    ("production", "key-spend", "spend_today", Decimal("9.25")),
    ("staging", "low-balance", "balance", Decimal("55")),
    ("research", "low-balance", "balance", Decimal("1")),
]


def live_and_alerts(session: Session, key: ApiKey) -> None:
    """The account's last live poll and the alerts about it, through the store's functions."""
    today, balance, listed = LIVE[key.name]
    own = {"usage_daily": today, "usage_monthly": today, "balance": balance}
    observations = [Observation(SELF, "account", key.name, own)]
    observations += [
        Observation(f"hash-{name}", "key", name, {"usage_daily": spent, "limit_remaining": left})
        for name, (spent, left) in listed.items()
    ]
    snapshots.record(session, key.id, observations, POLLED, complete=True)
    source = Source(key.id, key.user_id, key.name, key.kind, key.key_encrypted)
    snapshots.mark_polled(session, source, "account", POLLED)
    for account, rule, metric, value in ALERTS:
        if account == key.name:
            event = AlertEvent(
                rule=rule,
                metric=metric,
                subject=f"account:{key.id}",
                subject_name=f'account "{key.name}"',
                threshold="1",
                value=value,
                period="crossing",
                fired_at=NOW - dt.timedelta(hours=3),
                title=f"{rule} fired",
                body="",
            )
            alerts.add_event(session, event, ["ops"], event.fired_at)
            if rule == "key-spend":  # delivered; the others still pending
                (outgoing,) = [o for o in alerts.outgoing(session) if o.event_id == event.id]
                alerts.record_attempts(
                    session, outgoing.id, attempts=1, at=event.fired_at, status="sent", error=None
                )


def keys_of(session: Session, key: ApiKey, costs: dict[tuple[dt.date, str], Decimal]) -> None:
    """production's catalogued keys, each with its share of every day and model."""
    for name, share in SHARES.items():
        entry = AccountKey(
            account_id=key.id,
            hash=f"hash-{name}",
            name=name,
            label=name,
            disabled=False,
            first_seen_at=NOW,
            last_seen_at=NOW,
        )
        session.add(entry)
        session.flush()
        session.add_all(
            KeyUsageStats(account_key_id=entry.id, date=day, model=model, cost=to_money(c * share))
            for (day, model), c in costs.items()
        )


def seed(url: str) -> tuple[str, dict[str, dict[tuple[dt.date, str], Decimal]]]:
    """Users, keys, usage and one ok run; returns alice's token and each key's daily costs."""
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    users = {email: accounts.add_user(factory, email).id for email in (ALICE, BOB)}
    costs: dict[str, dict[tuple[dt.date, str], Decimal]] = {}
    with Session(engine) as session, session.begin():
        run = SyncRun(trigger="schedule", status="ok", keys_ok=len(KEYS))
        run.started_at = run.finished_at = NOW - dt.timedelta(hours=2)
        session.add(run)
        for name, (owner, models, seed_, scale) in KEYS.items():
            key = ApiKey(
                user_id=users[owner], name=name, key_encrypted="v1:test:AAAA", kind=KIND_MANAGEMENT
            )
            session.add(key)
            session.flush()
            session.add(
                SyncKeyResult(
                    run_id=run.id, api_key_id=key.id, status="ok", finished_at=run.finished_at
                )
            )
            activity = generate_activity(
                today=TODAY, days=60, models=models, seed=seed_, scale=scale
            )
            totals = expected_totals(activity)
            costs[name] = {day_model: t["usage"] for day_model, t in totals.items()}
            for (day, model), t in totals.items():
                session.add(
                    UsageStats(
                        api_key_id=key.id,
                        date=day,
                        model=model,
                        requests_count=t["requests"],
                        tokens_input=t["prompt_tokens"],
                        tokens_output=t["completion_tokens"],
                        tokens_reasoning=t["reasoning_tokens"],
                        cost=t["usage"],
                        byok_cost=t["byok_usage_inference"],
                    )
                )
            live_and_alerts(session, key)
            if name == "production":
                keys_of(session, key, costs[name])
    _, token = accounts.create_token(factory, ALICE, "dashboard")
    engine.dispose()
    return token, costs


def spent(
    costs: dict[str, dict[tuple[dt.date, str], Decimal]],
    names: tuple[str, ...],
    first: dt.date,
    last: dt.date,
) -> Decimal:
    return sum(
        (cost for name in names for (day, _), cost in costs[name].items() if first <= day <= last),
        Decimal(0),
    )


def runway(balance: Decimal, costs: dict[tuple[dt.date, str], Decimal]) -> str:
    """Days of ``balance`` at the mean of the last 7 complete days, as the page shows it."""
    mean = to_money(spent({"k": costs}, ("k",), TODAY - dt.timedelta(days=7), TODAY) / 7)
    assert mean is not None
    return f"{(balance / mean).quantize(Decimal('0.1')).normalize():f} days"


def cells(page: Page, table_id: str) -> list[list[str]]:
    """The table's body, row by row, each cell's text."""
    rows = page.locator(f"#{table_id} tbody tr")
    return [[c.strip() for c in row.split("\t")] for row in rows.all_inner_texts()]


def figure(page: Page, element_id: str) -> tuple[str, str]:
    element = page.locator(f"#{element_id}")
    return element.inner_text(), str(element.get_attribute("data-usd"))


def test_dashboard_refuses_a_bad_token_then_shows_the_chart_and_totals(
    sqlite_url: str,
) -> None:
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: run `make browser`"
    token, costs = seed(sqlite_url)
    engine = create_db_engine(sqlite_url)
    ctx = HttpContext(
        settings=Settings(),
        session_factory=make_session_factory(engine),
        scheduler_alive=lambda: True,
        clock=lambda: NOW,
    )
    mine = ("production", "staging")
    last_30 = spent(costs, mine, dt.date(2026, 10, 21), dt.date(2026, 11, 19))
    november = spent(costs, mine, dt.date(2026, 11, 1), dt.date(2026, 11, 19))
    october = spent(costs, mine, dt.date(2026, 10, 1), dt.date(2026, 10, 31))
    BUILD.mkdir(exist_ok=True)

    with serving(ctx) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        hosts = set()
        page.on("request", lambda request: hosts.add(request.url.split("/")[2]))

        page.goto(url + "/")
        page.fill("#token", "orw_not-a-real-token")
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-state=refused]")
        assert "Token refused" in page.inner_text("#message")
        assert page.inner_html("#panels") == ""

        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_selector("#daily-chart")
        assert page.is_hidden("#token-form")
        assert page.inner_text("#who") == ALICE
        assert figure(page, "total-30d") == (render.dollars(last_30), f"{last_30:f}")
        assert figure(page, "month-to-date") == (render.dollars(november), f"{november:f}")
        assert figure(page, "previous-month") == (render.dollars(october), f"{october:f}")
        assert page.locator("#daily-chart rect.bar").count() > 30 * 8
        legend = page.locator("#daily-chart + .legend li").all_inner_texts()
        assert len(legend) == 9 and legend[-1] == "other"
        assert page.locator("#top-accounts tbody tr").all_inner_texts()[0].startswith("production")
        chatbot = {k: to_money(c * SHARES["chatbot"]) for k, c in costs["production"].items()}
        chatbot_30d = spent(
            {"chatbot": {k: c or Decimal(0) for k, c in chatbot.items()}},
            ("chatbot",),
            dt.date(2026, 10, 21),
            dt.date(2026, 11, 19),
        )
        top_key = cells(page, "top-keys")[0]
        assert top_key == ["chatbot", "production", render.dollars(chatbot_30d)]

        # now: today's spend over her two accounts, each one's balance and runway
        assert figure(page, "today") == ("$12.90", "12.900000000")
        assert "as of 11:55 UTC · 2 accounts" in page.inner_text("#today + .sub")
        rows = cells(page, "accounts-now")
        assert [r[:4] for r in rows] == [
            ["production", "$12.50", "$12.50", "$842.10"],
            ["staging", "$0.40", "$0.40", "$55.00"],
        ]
        assert [r[5] for r in rows] == [
            runway(Decimal("842.1"), costs["production"]),
            runway(Decimal("55"), costs["staging"]),
        ]
        assert [r[:3] for r in cells(page, "keys-today")] == [
            ["chatbot", "production", "$9.25"],
            ["batch-jobs", "production", "$3.25"],
        ]
        assert [r[1:] for r in cells(page, "alerts")] == [
            ["low-balance", 'account "staging"', "$55.00", "ops pending"],
            ["key-spend", 'account "production"', "$9.25", "ops sent"],
        ]
        text = page.inner_text("body")
        assert "research" not in text and BOB not in text  # bob's key is not alice's to see
        assert "$99.00" not in text and "$1.00" not in text
        page.screenshot(path=str(BUILD / "dashboard.png"), full_page=True)

        page.reload()  # the token is kept for the tab's session: no second prompt
        page.wait_for_selector("#daily-chart")
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(BUILD / "dashboard-phone.png"), full_page=True)
        browser.close()
    engine.dispose()
    assert hosts == {url.removeprefix("http://")}  # no CDN, no font, nothing else
    assert (BUILD / "dashboard.png").stat().st_size > 10_000
