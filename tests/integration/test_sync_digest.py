"""An answer identical to the last stored one is not validated nor stored again, unless the
stored rows changed meanwhile: then the sync repairs them (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker import accounts
from worker.config import Settings
from worker.crypto import Keyring
from worker.models import ApiKey, UsageStats
from worker.openrouter import ActivityAnswer
from worker.store import WriteCounts
from worker.sync import RunSummary, run_sync
from worker.testing.fake_openrouter import FakeOpenRouter, expected_totals, generate_activity
from worker.testing.usage import stored_usage_of

TODAY = dt.date(2026, 5, 1)
SECRET = "sk-or-v1-" + "d" * 64
ROWS = 30 * 3  # 30 days x 3 models (2 endpoints each, summed)


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=TODAY) as server:
        server.add_key(SECRET, rows=_raw(seed=1))
        yield server


@pytest.fixture
def key_id(session_factory: sessionmaker[Session], keyring: Keyring) -> int:
    accounts.add_user(session_factory, "digest@example.com")
    return accounts.add_key(session_factory, keyring, "digest@example.com", "k", SECRET).id


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the answers validated (ActivityAnswer.parse calls)."""
    calls: list[int] = []
    original = ActivityAnswer.parse

    def counting(self: ActivityAnswer) -> Any:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(ActivityAnswer, "parse", counting)
    return calls


def _raw(seed: int) -> list[dict[str, Any]]:
    return generate_activity(today=TODAY, days=30, models=3, endpoints=2, seed=seed)


def _sync(
    session_factory: sessionmaker[Session], keyring: Keyring, fake: FakeOpenRouter
) -> RunSummary:
    settings = Settings().replace("openrouter", base_url=fake.base_url)
    summary = run_sync(session_factory, settings, keyring, today=TODAY)
    assert summary.status == "ok"
    assert summary.requests == 1
    return summary


def _expected() -> dict[Any, tuple[Any, ...]]:
    return {
        pair: (
            v["requests"],
            v["prompt_tokens"],
            v["completion_tokens"],
            v["reasoning_tokens"],
            v["usage"],
            v["byok_usage_inference"],
        )
        for pair, v in expected_totals(_raw(seed=1)).items()
    }


def _change(session_factory: sessionmaker[Session], key: int, statement: Any) -> None:
    with session_factory.begin() as session:
        session.execute(statement.where(UsageStats.api_key_id == key))


def test_identical_answer_is_neither_validated_nor_written(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    key_id: int,
    parses: list[int],
) -> None:
    first = _sync(session_factory, keyring, fake)
    assert first.counts == WriteCounts(inserted=ROWS)
    assert len(parses) == 1
    with session_factory() as session:
        key = session.get(ApiKey, key_id)
        assert key is not None and key.activity_digest and key.activity_checksum

    again = _sync(session_factory, keyring, fake)
    assert again.counts == WriteCounts(unchanged=ROWS)
    assert again.keys[0].counts == WriteCounts(unchanged=ROWS)
    assert len(parses) == 1  # not validated again
    assert stored_usage_of(session_factory, key_id) == _expected()


@pytest.mark.parametrize(
    ("change", "counts"),
    [
        (update(UsageStats).values(cost=UsageStats.cost + Decimal("0.000000001")), "updated"),
        (update(UsageStats).values(requests_count=UsageStats.requests_count + 1), "updated"),
        (update(UsageStats).values(model="x/renamed"), "renamed"),
        (delete(UsageStats), "inserted"),
    ],
    ids=["cost", "requests", "model", "deleted"],
)
def test_a_manual_change_to_stored_rows_is_repaired_by_the_next_sync(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    key_id: int,
    parses: list[int],
    change: Any,
    counts: str,
) -> None:
    _sync(session_factory, keyring, fake)
    with session_factory() as session:
        victim = (
            session.execute(
                select(UsageStats.id).where(UsageStats.api_key_id == key_id).order_by(UsageStats.id)
            )
            .scalars()
            .first()
        )
    _change(session_factory, key_id, change.where(UsageStats.id == victim))

    repaired = _sync(session_factory, keyring, fake)
    assert len(parses) == 2  # the identical answer was validated and stored again
    expected = {
        "updated": WriteCounts(updated=1, unchanged=ROWS - 1),
        "inserted": WriteCounts(inserted=1, unchanged=ROWS - 1),
        # the renamed row is a model no longer reported: deleted, and the real one inserted
        "renamed": WriteCounts(inserted=1, unchanged=ROWS - 1, deleted=1),
    }[counts]
    assert repaired.counts == expected
    assert stored_usage_of(session_factory, key_id) == _expected()

    # Repaired, the checksum is recorded again: the next identical answer is skipped.
    assert _sync(session_factory, keyring, fake).counts == WriteCounts(unchanged=ROWS)
    assert len(parses) == 2


def test_a_changed_answer_isstored_usage_of(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    key_id: int,
    parses: list[int],
) -> None:
    _sync(session_factory, keyring, fake)
    raw = _raw(seed=1)
    raw[0] = {**raw[0], "requests": raw[0]["requests"] + 5}
    fake.set_rows(SECRET, raw)
    changed = _sync(session_factory, keyring, fake)
    assert changed.counts == WriteCounts(updated=1, unchanged=ROWS - 1)
    assert len(parses) == 2
    # Back to the first answer: its digest is no longer the last stored one.
    fake.set_rows(SECRET, _raw(seed=1))
    assert _sync(session_factory, keyring, fake).counts == WriteCounts(
        updated=1, unchanged=ROWS - 1
    )
    assert stored_usage_of(session_factory, key_id) == _expected()


def test_another_window_is_another_digest() -> None:
    one = ActivityAnswer(text='{"data": []}', requests_made=1, today=TODAY)
    assert (
        one.digest() == ActivityAnswer(text='{"data": []}', requests_made=2, today=TODAY).digest()
    )
    assert (
        one.digest()
        != ActivityAnswer(
            text='{"data": []}', requests_made=1, today=TODAY + dt.timedelta(days=1)
        ).digest()
    )
    assert one.digest() != ActivityAnswer(text='{"data":[]}', requests_made=1, today=TODAY).digest()


def test_an_invalid_answer_fails_its_key_only_and_is_not_remembered(
    session_factory: sessionmaker[Session], keyring: Keyring, fake: FakeOpenRouter, key_id: int
) -> None:
    broken = "sk-or-v1-" + "e" * 64
    raw = _raw(seed=2)
    fake.add_key(broken, rows=[{**raw[0], "requests": -1}, *raw[1:]])
    broken_id = accounts.add_key(session_factory, keyring, "digest@example.com", "b", broken).id
    settings = Settings().replace("openrouter", base_url=fake.base_url)

    summary = run_sync(session_factory, settings, keyring, today=TODAY)

    assert summary.status == "failed"
    outcomes = {k.api_key_id: k for k in summary.keys}
    assert outcomes[key_id].status == "ok"
    assert outcomes[key_id].counts == WriteCounts(inserted=ROWS)
    failed = outcomes[broken_id]
    assert (failed.status, failed.reason, failed.http_requests) == ("failed", "invalid_response", 1)
    assert failed.error is not None and "field 'requests'" in failed.error
    with session_factory() as session:
        key = session.get(ApiKey, broken_id)
        assert key is not None
        # Not accepted (as when the fetch thread validated): no last use, nothing remembered.
        assert key.last_used_at is None
        assert key.activity_digest is None and key.activity_checksum is None
    assert stored_usage_of(session_factory, broken_id) == {}
