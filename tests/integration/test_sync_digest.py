"""An answer identical to the last one stored (same window, same body) is not stored again; a
changed or invalid answer is handled in full (SQLite and PostgreSQL, realistic data)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import UsageTriggers
from worker.config import Settings
from worker.core.usage import WriteCounts
from worker.store.models import ApiKey
from worker.sync.run import run_sync
from worker.sync.summary import RunSummary
from worker.testing.activity_data import as_stored, expected_totals, generate_activity
from worker.testing.clock import PinnedClock
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.usage import stored_usage_of
from worker.vault import accounts
from worker.vault.crypto import Keyring

TODAY = dt.date(2026, 5, 1)
SECRET = "sk-or-v1-" + "d" * 64
ROWS = 30 * 3  # 30 days x 3 models (2 endpoints each, summed)


@pytest.fixture
def pinned_day() -> dt.date:
    return TODAY


@pytest.fixture(autouse=True)
def clock(pinned_clock: PinnedClock) -> None:
    """The worker's clock at 09:00 UTC on TODAY, not noon."""
    pinned_clock.at(dt.datetime(2026, 5, 1, 9, tzinfo=dt.UTC))


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(today=TODAY) as server:
        server.add_key(SECRET, rows=_raw(seed=1))
        yield server


@pytest.fixture
def key_id(session_factory: sessionmaker[Session], keyring: Keyring) -> int:
    accounts.add_user(session_factory, "digest@example.com")
    return accounts.add_key(session_factory, keyring, "digest@example.com", "k", SECRET).id


def _raw(seed: int) -> list[dict[str, Any]]:
    return generate_activity(today=TODAY, days=30, models=3, endpoints=2, seed=seed)


def _sync(
    session_factory: sessionmaker[Session], keyring: Keyring, fake: FakeOpenRouter
) -> RunSummary:
    settings = (
        Settings().replace("openrouter", base_url=fake.base_url).replace("sync", history_days=0)
    )
    return run_sync(session_factory, settings, keyring)


def _expected(seed: int = 1) -> dict[Any, tuple[Any, ...]]:
    return as_stored(expected_totals(_raw(seed)))


def _remembered(session_factory: sessionmaker[Session], key_id: int) -> tuple[Any, Any]:
    with session_factory() as session:
        key = session.get(ApiKey, key_id)
        assert key is not None
        return key.activity_digest, key.activity_rows


def test_an_identical_answer_writes_nothing_and_reports_every_row_unchanged(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    key_id: int,
    usage_triggers: UsageTriggers,
) -> None:
    first = _sync(session_factory, keyring, fake)
    # Its /activity, and its account's /workspaces and /keys.
    assert (first.status, first.counts, first.requests) == ("ok", WriteCounts(inserted=ROWS), 3)
    digest, rows = _remembered(session_factory, key_id)
    assert digest is not None and len(digest) == 64 and rows == ROWS

    again = _sync(session_factory, keyring, fake)

    assert (again.status, again.requests) == ("ok", 3)
    assert again.keys[0].counts == WriteCounts(unchanged=ROWS)
    assert usage_triggers.writes() == ["insert"] * ROWS
    assert stored_usage_of(session_factory, key_id) == _expected()
    assert _remembered(session_factory, key_id) == (digest, ROWS)


def test_a_changed_answer_is_stored_and_remembered_in_its_turn(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    fake: FakeOpenRouter,
    key_id: int,
) -> None:
    _sync(session_factory, keyring, fake)
    first_digest, _rows = _remembered(session_factory, key_id)
    raw = _raw(seed=1)
    raw[0] = {**raw[0], "requests": raw[0]["requests"] + 5}
    fake.set_rows(SECRET, raw)

    changed = _sync(session_factory, keyring, fake)

    assert changed.counts == WriteCounts(updated=1, unchanged=ROWS - 1)
    assert _remembered(session_factory, key_id)[0] not in (None, first_digest)
    # Back to the first answer: its digest is no longer the last stored one.
    fake.set_rows(SECRET, _raw(seed=1))
    assert _sync(session_factory, keyring, fake).counts == WriteCounts(
        updated=1, unchanged=ROWS - 1
    )
    assert stored_usage_of(session_factory, key_id) == _expected()
    assert _remembered(session_factory, key_id)[0] == first_digest


def test_an_invalid_answer_fails_its_key_only_and_is_not_remembered(
    session_factory: sessionmaker[Session], keyring: Keyring, fake: FakeOpenRouter, key_id: int
) -> None:
    broken = "sk-or-v1-" + "e" * 64
    raw = _raw(seed=2)
    fake.add_key(broken, rows=[{**raw[0], "requests": -1}, *raw[1:]])
    broken_id = accounts.add_key(session_factory, keyring, "digest@example.com", "b", broken).id

    summary = _sync(session_factory, keyring, fake)

    assert summary.status == "failed"
    outcomes = {k.api_key_id: k for k in summary.keys}
    assert (outcomes[key_id].status, outcomes[key_id].counts) == ("ok", WriteCounts(inserted=ROWS))
    failed = outcomes[broken_id]
    assert (failed.status, failed.reason, failed.http_requests) == ("failed", "invalid_response", 1)
    assert failed.error is not None and "field 'requests'" in failed.error
    assert _remembered(session_factory, broken_id) == (None, None)
    assert stored_usage_of(session_factory, broken_id) == {}
    # OpenRouter did answer 200: the key is known to be a management key.
    with session_factory() as session:
        key = session.get(ApiKey, broken_id)
        assert key is not None and key.kind == "management"
