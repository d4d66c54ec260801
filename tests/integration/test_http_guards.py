"""The guards on the HTTP face, on SQLite and PostgreSQL: ``/metrics`` counts the actions by
rule, action and outcome and the keys that drifted from their ``[[limits]]``; ``/api/v1/guards``
shows a token its own accounts' actions only; the dashboard has a panel of them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.config.limits import LimitTable
from worker.daemon.http.context import HttpContext
from worker.store import guards as store
from worker.store.db import transaction
from worker.store.models import AccountKey, ApiKey, User
from worker.testing import loopback
from worker.testing.clock import noon
from worker.testing.served import serving
from worker.vault import accounts

NOW = noon(dt.date(2026, 11, 20))
ALICE, BOB = "alice@example.com", "bob@example.com"
LIMITS = (LimitTable("[[limits]] #1 (keys 'ci-*')", ("ci-*",), (), Decimal(25), "daily", None),)


def _seed(factory: sessionmaker[Session]) -> dict[str, int]:
    """Alice's and Bob's accounts, a catalogued key each (Alice's drifted), and actions."""
    ids = {}
    with transaction(factory) as session:
        for email, name in ((ALICE, "alice-prod"), (BOB, "bob-prod")):
            user = User(email=email, password_hash="!")
            session.add(user)
            session.flush()
            key = ApiKey(user_id=user.id, name=name, key_encrypted="v1:x:y", kind="management")
            session.add(key)
            session.flush()
            ids[email] = key.id
            limit = Decimal(40) if email == ALICE else Decimal(25)
            session.add(
                AccountKey(
                    account_id=key.id, hash=f"{name}-hash", name="ci-main", label="l",
                    disabled=False, limit=limit, limit_reset="daily", first_seen_at=NOW,
                    last_seen_at=NOW, settings_seen_at=NOW,
                )
            )  # fmt: skip
            for n, (rule, action, status) in enumerate(
                [("runaway", "cap", "sent"), ("runaway", "disable", "failed"),
                 ("[[limits]] #1", "limit", "planned")]
            ):  # fmt: skip
                store.add(
                    session, rule=rule, source="alert", account_id=key.id,
                    key_hash=f"{name}-hash", key_name="ci-main", action=action,
                    period=f"2026-11-{10 + n}", mode="enforce", status=status,
                    restore="next_period", before="{}", wanted='{"disabled": true}',
                    attempts=0, created_at=NOW - dt.timedelta(hours=n),
                    error="change_refused: no" if status == "failed" else None,
                )  # fmt: skip
    return ids


@pytest.fixture
def served(session_factory: sessionmaker[Session]) -> Iterator[tuple[str, dict[str, str]]]:
    _seed(session_factory)
    tokens = {
        email: accounts.create_token(session_factory, email, "t")[1] for email in (ALICE, BOB)
    }
    settings = dataclasses.replace(Settings(), limits=LIMITS)
    ctx = HttpContext(
        settings=settings,
        session_factory=session_factory,
        scheduler_alive=lambda: True,
        clock=lambda: NOW,
    )
    with serving(ctx) as url:
        yield url, tokens


def _get(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return loopback.get(url, headers=headers, timeout=10)


def test_metrics_count_guard_actions_and_drifted_keys(
    served: tuple[str, dict[str, str]],
) -> None:
    url, _ = served
    text = _get(f"{url}/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("openrouter_watcher_guard", "openrouter_watcher_limits"))
    }
    guard = "openrouter_watcher_guard_actions"
    assert samples[(guard, (("action", "cap"), ("outcome", "sent"), ("rule", "runaway")))] == 2
    assert (
        samples[(guard, (("action", "disable"), ("outcome", "failed"), ("rule", "runaway")))] == 2
    )
    drift = "openrouter_watcher_limits_drifted_keys"
    assert samples[(drift, (("account", "alice-prod"), ("account_id", "1")))] == 1
    assert samples[(drift, (("account", "bob-prod"), ("account_id", "2")))] == 0


def test_the_api_shows_a_token_its_own_accounts_actions(
    served: tuple[str, dict[str, str]],
) -> None:
    url, tokens = served
    alice = _get(f"{url}/api/v1/guards", tokens[ALICE]).json()
    bob = _get(f"{url}/api/v1/guards?last=1", tokens[BOB]).json()
    assert [(a["id"], a["account_name"]) for a in alice] == [(1, "alice-prod"), (2, "alice-prod"),
                                                              (3, "alice-prod")]  # fmt: skip
    assert [(a["id"], a["status"]) for a in bob] == [(6, "planned")]
    assert _get(f"{url}/api/v1/guards").status_code == 401
    assert _get(f"{url}/api/v1/guards?last=x", tokens[BOB]).status_code == 400


def test_the_dashboard_has_a_guards_panel(served: tuple[str, dict[str, str]]) -> None:
    url, tokens = served
    html = _get(f"{url}/dashboard/panels", tokens[BOB]).text
    panel = html.split("<h2>Guards</h2>", 1)[1].split("</section>", 1)[0]
    assert panel.count("<tr>") == 4  # the header and Bob's three actions, none of Alice's
    assert "bob-prod" in panel and "alice-prod" not in panel
    assert 'class="failed" title="change_refused: no"' in panel
