"""The analytics budget in the database (worker.store.budget), on SQLite and PostgreSQL: 64
requests per account in any 60 s, counted by every process, never one more."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from worker.store.budget import AnalyticsBudget, reserve
from worker.store.db import transaction
from worker.store.models import AnalyticsRequest, ApiKey

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


def _reserve(factory: sessionmaker[Session], account: int, at: dt.datetime, limit: int) -> float:
    with transaction(factory) as session:
        return reserve(session, account, at, limit=limit, window=60.0)


def _recorded(factory: sessionmaker[Session], account: int) -> int:
    with factory() as session:
        return int(
            session.scalar(select(func.count()).where(AnalyticsRequest.account_id == account)) or 0
        )


def test_the_turn_after_the_limit_waits_until_the_oldest_leaves_the_window(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    account = sample_key.id
    sent = [NOW + dt.timedelta(seconds=n / 2) for n in range(64)]  # 0 s, 0.5 s, … 31.5 s
    assert [_reserve(session_factory, account, at, limit=64) for at in sent] == [0.0] * 64
    # At 40 s the minute holds 64: wait until the first one (0 s) has left it, at 60 s.
    wait = _reserve(session_factory, account, NOW + dt.timedelta(seconds=40), limit=64)
    assert 20.0 < wait <= 20.1
    assert _recorded(session_factory, account) == 64
    # At 60.2 s it has: the turn is taken, the request of 0 s forgotten.
    assert _reserve(session_factory, account, NOW + dt.timedelta(seconds=60.2), limit=64) == 0.0
    assert _recorded(session_factory, account) == 64


def test_each_account_has_its_own_budget(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    with transaction(session_factory) as session:
        other = ApiKey(user_id=sample_key.user_id, name="other", key_encrypted="v1:test:BBBB")
        session.add(other)
        session.flush()
        other_id = other.id
    assert _reserve(session_factory, sample_key.id, NOW, limit=1) == 0.0
    assert _reserve(session_factory, sample_key.id, NOW, limit=1) > 0
    assert _reserve(session_factory, other_id, NOW, limit=1) == 0.0


def test_concurrent_reservations_never_take_more_than_the_limit(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    results: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(5):
            wait = _reserve(session_factory, sample_key.id, NOW, limit=10)
            with lock:
                results.append(wait)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 20
    assert results.count(0.0) == 10
    assert _recorded(session_factory, sample_key.id) == 10


def test_acquire_sleeps_until_a_turn_is_free(
    session_factory: sessionmaker[Session], sample_key: ApiKey
) -> None:
    now = [NOW]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += dt.timedelta(seconds=seconds)

    budget = AnalyticsBudget(
        session_factory, sample_key.id, limit=2, clock=lambda: now[0], sleep=sleep
    )
    assert (budget.acquire(), budget.acquire()) == (0.0, 0.0)
    now[0] += dt.timedelta(seconds=10)
    waited = budget.acquire()
    assert slept and waited == sum(slept)
    assert 50.0 < waited < 50.2  # until the two of 0 s left the minute
    assert _recorded(session_factory, sample_key.id) == 1  # they are forgotten, the third kept
