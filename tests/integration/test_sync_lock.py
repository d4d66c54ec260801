"""The single-runner guarantee on PostgreSQL when the connection holding the lock dies: the
run notices before its next write and stops writing, and a second sync never writes beside it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.store.db import create_db_engine, make_session_factory
from worker.store.locking import lock_is_held
from worker.store.models import SyncRun
from worker.sync.run import locked_sync
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.usage import stored_usage_of
from worker.vault import accounts
from worker.vault.crypto import Keyring

TODAY = dt.date(2026, 11, 26)
D1 = dt.date(2026, 11, 24)
SECRETS = [f"sk-or-v1-{n:064d}" for n in range(3)]


def item(day: dt.date, model: str) -> dict[str, Any]:
    return {
        "date": day.isoformat(),
        "model": model,
        "endpoint_id": "e",
        "provider_name": "P",
        "requests": 1,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "reasoning_tokens": 0,
        "usage": Decimal("0.5"),
        "byok_usage_inference": Decimal(0),
    }


pytestmark = pytest.mark.usefixtures("pinned_clock")


@pytest.fixture
def pinned_day() -> dt.date:
    return TODAY


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    engine = create_db_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def world(pg: Engine, keyring: Keyring) -> Iterator[tuple[FakeOpenRouter, list[int]]]:
    factory = make_session_factory(pg)
    accounts.add_user(factory, "ops@example.com")
    ids = [
        accounts.add_key(factory, keyring, "ops@example.com", f"k{n}", secret).id
        for n, secret in enumerate(SECRETS)
    ]
    with FakeOpenRouter(today=TODAY) as fake:
        for secret in SECRETS:
            fake.add_key(secret, rows=[item(D1, "a/x")])
        yield fake, ids


def _settings(fake: FakeOpenRouter) -> Settings:
    return (
        Settings()
        .replace("sync", concurrency=1, history_days=0)
        .replace("openrouter", base_url=fake.base_url, max_attempts=1)
    )


def _activity_answered(fake: FakeOpenRouter) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/activity"))


def _kill_the_lock_holder(engine: Engine) -> None:
    with engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted"
            )
        ).scalars()
        assert list(killed) == [True]


def _runs(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with factory() as session:
        runs = session.scalars(select(SyncRun).order_by(SyncRun.id))
        return [(r.trigger, r.status) for r in runs]


def _wait_for_rows(factory: sessionmaker[Session], key_id: int) -> None:
    deadline = time.monotonic() + 10
    while not stored_usage_of(factory, key_id):
        assert time.monotonic() < deadline, "the first key was never written"
        time.sleep(0.02)


def test_a_run_whose_lock_connection_dies_stops_writing_and_a_second_run_is_alone(
    pg: Engine, keyring: Keyring, world: tuple[FakeOpenRouter, list[int]]
) -> None:
    fake, ids = world
    factory = make_session_factory(pg)
    second: list[Any] = []

    def on_request(_path: str, _query: dict[str, str]) -> None:
        # While the first run waits for its second key (its first one written), its lock
        # connection is killed and a second sync runs to the end (its own requests pass
        # through here too).
        if _path == "/activity" and _activity_answered(fake) == 1 and not second:
            second.append("started")
            _wait_for_rows(factory, ids[0])
            _kill_the_lock_holder(pg)
            other = create_db_engine(pg.url.render_as_string(hide_password=False))
            try:
                settings = _settings(fake)
                second.append(locked_sync(other, settings, keyring, trigger="backfill", days=[D1]))
            finally:
                other.dispose()

    fake.on_request = on_request
    first = locked_sync(pg, _settings(fake), keyring, trigger="sync")

    assert first is not None and second[1] is not None
    assert first.stopped is not None and "lock was lost" in first.stopped
    assert (first.status, first.keys_ok) == ("interrupted", 1)  # only the key before the loss
    assert first.keys_skipped == 2
    assert second[1].status == "ok" and second[1].keys_ok == 3
    assert _runs(factory) == [("sync", "interrupted"), ("backfill", "ok")]
    assert all(set(stored_usage_of(factory, key)) == {(D1, "a/x")} for key in ids)
    assert not lock_is_held(pg)


def test_idle_session_timeout_ending_the_lock_connection_stops_the_run(
    pg: Engine, keyring: Keyring, world: tuple[FakeOpenRouter, list[int]], postgres_url: str
) -> None:
    fake, ids = world
    database = pg.url.database
    with pg.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER DATABASE \"{database}\" SET idle_session_timeout = '400ms'"))
    engine = create_db_engine(postgres_url)  # new connections get the timeout
    fake.latency = 0.6  # each answer keeps the lock's connection idle longer than that
    try:
        summary = locked_sync(engine, _settings(fake), keyring, trigger="sync")
    finally:
        engine.dispose()
    assert summary is not None and summary.stopped is not None
    assert summary.status == "interrupted"
    factory = make_session_factory(pg)
    assert _runs(factory) == [("sync", "interrupted")]
    assert all(stored_usage_of(factory, key) == {} for key in ids)
