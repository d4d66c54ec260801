"""``PATCH /keys/{hash}`` through the real client against the fake OpenRouter, which follows the
contract (``shared/openrouter/openapi-keys-update.yaml``, operation ``updateKeys``): the fields
it takes, the 200 answer (the key as ``/keys`` lists it), 400/401/404/429/500, and the state it
keeps (``/keys`` and ``/key`` show the change afterwards)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from worker.config import OpenRouterSettings
from worker.core.errors import (
    BadRequestError,
    KeyChangeRefusedError,
    RateLimitedError,
    UnknownKeyError,
    UpstreamUnavailableError,
)
from worker.openrouter import OpenRouterClient
from worker.testing.clock import noon
from worker.testing.fake_account import FakeAccount, generate_account
from worker.testing.fake_openrouter import FakeOpenRouter, Fault
from worker.testing.loopback import request as loopback_request

TODAY = dt.date(2026, 11, 20)
MGMT = "sk-or-v1-changes-" + "0" * 48


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=TODAY) as server:
        yield server


@pytest.fixture
def account(fake: FakeOpenRouter) -> FakeAccount:
    world = generate_account(today=TODAY, keys=3, days=10, models=2, seed=11)
    world.keys[0].spend_today = Decimal("4.25")
    return fake.add_account(MGMT, world)


def _client(fake: FakeOpenRouter, **options: object) -> OpenRouterClient:
    settings = OpenRouterSettings(base_url=fake.base_url, backoff_initial=0, **options)  # type: ignore[arg-type]
    return OpenRouterClient(settings, wall_clock=lambda: noon(TODAY), sleep=lambda _s: None)


def _patches(fake: FakeOpenRouter) -> list[int]:
    return [r.status for r in fake.requests if r.path.startswith("/api/v1/keys/")]


def test_a_change_is_answered_with_the_key_and_kept(
    fake: FakeOpenRouter, account: FakeAccount
) -> None:
    key = account.keys[0]
    with _client(fake) as client:
        changed = client.update_key(
            MGMT, key.hash, {"limit": Decimal("4.25"), "limit_reset": "daily"}
        )
        listed = {k.hash: k for k in client.list_keys(MGMT)}
        own = client.get_key(key.secret or "")
        disabled = client.update_key(MGMT, key.hash, {"disabled": True})
    assert changed.hash == key.hash
    assert changed.settings.limit == Decimal("4.25")
    assert changed.settings.limit_reset == "daily"
    assert changed.spend.limit_remaining == Decimal(0)  # today's spend is the whole limit
    assert changed.updated_at is not None
    assert listed[key.hash].settings == changed.settings
    assert own.limit == Decimal("4.25") and own.spend is not None
    assert own.spend.limit_reset == "daily"
    assert disabled.settings.disabled and listed[account.keys[1].hash].settings.disabled is False
    assert _patches(fake) == [200, 200]


def test_none_lifts_the_limit_and_its_reset(fake: FakeOpenRouter, account: FakeAccount) -> None:
    key = account.keys[1]
    key.limit = Decimal(50)
    with _client(fake) as client:
        changed = client.update_key(MGMT, key.hash, {"limit": None, "limit_reset": None})
    assert (changed.spend.limit, changed.spend.limit_reset, changed.spend.limit_remaining) == (
        None,
        None,
        None,
    )


def test_an_unknown_hash_is_404_unknown_key(fake: FakeOpenRouter, account: FakeAccount) -> None:
    with _client(fake) as client, pytest.raises(UnknownKeyError, match="deleted"):
        client.update_key(MGMT, "f" * 64, {"disabled": True})
    assert _patches(fake) == [404]


def test_an_ordinary_key_is_refused_401_and_not_retried(
    fake: FakeOpenRouter, account: FakeAccount
) -> None:
    ordinary = account.keys[2].secret or ""
    with _client(fake) as client, pytest.raises(KeyChangeRefusedError, match="401") as err:
        client.update_key(ordinary, account.keys[0].hash, {"disabled": True})
    assert _patches(fake) == [401]
    assert err.value.requests == 1
    assert account.keys[0].disabled is False


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retried_then_reported(
    fake: FakeOpenRouter, account: FakeAccount, status: int
) -> None:
    fake.fail_forever(MGMT, Fault(status=status, retry_after="0" if status == 429 else None))
    error = RateLimitedError if status == 429 else UpstreamUnavailableError
    with _client(fake, max_attempts=3) as client, pytest.raises(error):
        client.update_key(MGMT, account.keys[0].hash, {"disabled": True})
    assert _patches(fake) == [status] * 3
    assert account.keys[0].disabled is False


def test_a_5xx_then_200_changes_the_key_once(fake: FakeOpenRouter, account: FakeAccount) -> None:
    fake.inject(MGMT, Fault(status=502))
    with _client(fake) as client:
        changed = client.update_key(MGMT, account.keys[0].hash, {"disabled": True})
    assert changed.settings.disabled
    assert _patches(fake) == [502, 200]


@pytest.mark.parametrize("status", [400, 408])
def test_a_4xx_is_never_retried(fake: FakeOpenRouter, account: FakeAccount, status: int) -> None:
    fake.fail_forever(MGMT, Fault(status=status))
    expected = BadRequestError if status == 400 else UpstreamUnavailableError
    with _client(fake, max_attempts=5) as client, pytest.raises(expected):
        client.update_key(MGMT, account.keys[0].hash, {"disabled": True})
    assert _patches(fake) == [status]


@pytest.mark.parametrize(
    "body",
    [
        {"limit": -1},
        {"limit_reset": "yearly"},
        {"disabled": "yes"},
        {"include_byok_in_limit": 1},
        {"owner": "me"},
        {},
        [],
    ],
)
def test_the_fake_refuses_a_body_the_contract_does_not_allow(
    fake: FakeOpenRouter, account: FakeAccount, body: object
) -> None:
    answer = loopback_request(
        "PATCH",
        f"{fake.base_url}/keys/{account.keys[0].hash}",
        headers={"Authorization": f"Bearer {MGMT}", "Content-Type": "application/json"},
        content=json.dumps(body).encode(),
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 400
    assert account.keys[0].limit is None and account.keys[0].disabled is False


def test_only_the_contracts_fields_may_be_sent(fake: FakeOpenRouter, account: FakeAccount) -> None:
    with _client(fake) as client, pytest.raises(ValueError, match="owner"):
        client.update_key(MGMT, account.keys[0].hash, {"owner": "me"})
    assert _patches(fake) == []
