"""The dashboard in a real headless browser: Playwright driving Debian's Chromium.

A seeded database (two users, three keys, 60 days of realistic usage over ten models), the
application on a real uvicorn, and a page that must refuse a bad token, then show the chart
and the right totals for a good one, only its own user's keys, on a desktop and on a phone,
without contacting any other host. Screenshots go to ``build/`` for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from pathlib import Path

from playwright.sync_api import Page, sync_playwright
from sqlalchemy.orm import Session

from worker import accounts, render
from worker.config import Settings
from worker.db import create_db_engine, make_session_factory
from worker.http.context import HttpContext
from worker.models import ApiKey, SyncKeyResult, SyncRun, UsageStats
from worker.testing.activity_data import expected_totals, generate_activity
from worker.testing.served import serving

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
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()
ALICE, BOB = "alice@example.com", "bob@example.com"
# name: (owner, models, seed, scale); alice's ten models make a top 8 and an "other"
KEYS = {
    "production": (ALICE, 10, 1, Decimal("1")),
    "staging": (ALICE, 3, 2, Decimal("0.2")),
    "research": (BOB, 4, 3, Decimal("0.5")),
}


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
            key = ApiKey(user_id=users[owner], name=name, key_encrypted="v1:test:AAAA")
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
        text = page.inner_text("body")
        assert "research" not in text and BOB not in text  # bob's key is not alice's to see
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
