"""The fake OpenRouter's accounts: /keys, /workspaces, /credits, per-key /activity and
/analytics/query, consistent with one generated world, and read through the real client."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from decimal import Decimal

import pytest

from worker.config import OpenRouterSettings
from worker.core.errors import RateLimitedError
from worker.openrouter import OpenRouterClient, daily_totals
from worker.openrouter.pacing import RateLimiter
from worker.testing.clock import noon
from worker.testing.fake_account import FakeAccount, generate_account, key_hash, replace_key
from worker.testing.fake_openrouter import FakeOpenRouter

TODAY = dt.date(2026, 5, 1)
MGMT = "sk-or-v1-mgmt-" + "9" * 50


_noon = functools.partial(noon, TODAY)  # the client's clock


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=TODAY) as server:
        yield server


@pytest.fixture
def account(fake: FakeOpenRouter) -> FakeAccount:
    return fake.add_account(
        MGMT, generate_account(today=TODAY, keys=4, days=60, models=2, seed=5, deleted=1)
    )


def _client(fake: FakeOpenRouter, **options: object) -> OpenRouterClient:
    settings = OpenRouterSettings(base_url=fake.base_url, backoff_initial=0, **options)  # type: ignore[arg-type]
    return OpenRouterClient(settings, wall_clock=_noon, analytics_pace=RateLimiter(1000, 60))


def _totals(rows: list) -> dict[tuple[dt.date, str], tuple]:  # type: ignore[type-arg]
    return {(r.date, r.model): tuple(r[2:]) for r in rows}


def test_keys_are_listed_by_page_and_workspace_deleted_ones_never(fake: FakeOpenRouter) -> None:
    account = fake.add_account(
        MGMT, generate_account(today=TODAY, keys=205, days=1, models=1, deleted=1)
    )
    replace_key(account, account.keys[1].hash, disabled=True)
    replace_key(account, account.keys[2].hash, workspace_id="11111111-1111-4111-8111-111111111111")
    with _client(fake) as client:
        default = client.list_keys(MGMT)
        other = client.list_keys(MGMT, "11111111-1111-4111-8111-111111111111")
        assert client.list_workspaces(MGMT) is None  # refused: the account predates them
        account.workspaces = ["w1", "w2", "w3"]
        assert client.list_workspaces(MGMT) == ["w1", "w2", "w3"]
    # 205 keys: one in another workspace, the last one deleted (never listed).
    assert len(default) == 203 and default[1].disabled and not default[0].disabled
    assert [k.name for k in other] == ["key 2"]
    assert default[0].hash == key_hash(account.keys[0].secret or "")
    pages = [r.query.get("offset") for r in fake.requests if r.path.endswith("/keys")]
    assert pages == ["0", "100", "200", "203", "0", "1"]  # each workspace ends on an empty page


def test_the_account_is_the_sum_of_its_keys_deleted_ones_included(
    fake: FakeOpenRouter, account: FakeAccount
) -> None:
    with _client(fake) as client:
        whole = daily_totals(client.get_activity(MGMT).rows)
        per_key = [
            daily_totals(client.get_activity(MGMT, key_hash=k.hash).rows) for k in account.keys
        ]
    summed: dict[tuple[dt.date, str], list] = {}  # type: ignore[type-arg]
    for rows in per_key:
        for row in rows:
            total = summed.setdefault((row.date, row.model), [0, 0, 0, 0, Decimal(0), Decimal(0)])
            for index, value in enumerate(row[2:]):
                total[index] += value
    assert _totals(whole) == {pair: tuple(v) for pair, v in summed.items()}
    assert all(rows for rows in per_key)


def test_analytics_answer_the_same_money_per_day_and_model_over_a_longer_history(
    fake: FakeOpenRouter, account: FakeAccount
) -> None:
    first, last = TODAY - dt.timedelta(days=30), TODAY - dt.timedelta(days=1)
    with _client(fake) as client:
        activity = daily_totals(client.get_activity(MGMT).rows)
        analytics = client.analytics(MGMT, first, last)
        older = client.analytics(MGMT, TODAY - dt.timedelta(days=60), first - dt.timedelta(days=1))
        one = client.analytics(MGMT, first, last, key_hash=account.keys[0].hash)
        unknown = client.analytics(MGMT, first, last, key_hash="f" * 64)
    assert (analytics.truncated, analytics.warnings) == (False, [])
    assert _totals(analytics.rows) == _totals(activity)
    assert {r.date for r in older.rows} == {
        TODAY - dt.timedelta(days=n) for n in range(31, 61)
    }  # older than /activity's window
    assert one.rows and {r.model for r in one.rows} <= {r.model for r in activity}
    assert (unknown.rows, len(unknown.warnings)) == ([], 1)


def test_analytics_say_truncated_past_their_row_limit_and_429_past_their_rate(
    fake: FakeOpenRouter, account: FakeAccount
) -> None:
    account.analytics_row_limit = 10
    account.analytics_per_minute = 2
    account.analytics_window = 30.0
    first = TODAY - dt.timedelta(days=30)
    with _client(fake, max_attempts=1) as client:
        assert client.analytics(MGMT, first, first + dt.timedelta(days=3)).truncated is False
        cut = client.analytics(MGMT, first, TODAY - dt.timedelta(days=1))
        with pytest.raises(RateLimitedError):
            client.analytics(MGMT, first, first)
    assert cut.truncated and len(cut.rows) == 10


def test_credits_and_key_figures_agree_with_the_activity(
    fake: FakeOpenRouter, account: FakeAccount
) -> None:
    replace_key(account, account.keys[0].hash, spend_today=Decimal("1.5"), limit=Decimal(500))
    with _client(fake) as client:
        credits = client.get_credits(MGMT)
        listed = client.list_keys(MGMT)[0]
        info = client.get_key(account.keys[0].secret or "")
    history = sum((Decimal(str(r["usage"])) for k in account.keys for r in k.rows), Decimal(0))
    assert credits.total_usage == history + Decimal("1.5")
    assert credits.balance == credits.total_credits - credits.total_usage
    assert listed.spend.daily == Decimal("1.5")
    assert listed.spend.limit == Decimal(500)
    assert info.spend is not None and info.spend == listed.spend
    assert (info.is_management_key, info.label) == (False, account.keys[0].label)
