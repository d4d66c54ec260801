"""A key whose write meets SQLite locked by another connection fails as ``database_busy`` (the
store's raw driver calls included), not as something unexpected."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
import structlog

from worker.config import Settings
from worker.store.db import create_db_engine, make_session_factory
from worker.sync.run import run_sync
from worker.testing.fake_openrouter import FakeOpenRouter
from worker.testing.usage import stored_usage_of
from worker.vault import accounts
from worker.vault.crypto import Keyring

TODAY = dt.date(2026, 11, 26)
SECRET = "sk-or-v1-" + "b" * 64


@pytest.fixture
def pinned_day() -> dt.date:
    return TODAY


@pytest.mark.usefixtures("pinned_clock")
def test_a_write_meeting_a_locked_sqlite_database_fails_the_key_as_database_busy(
    sqlite_url: str, keyring: Keyring
) -> None:
    engine = create_db_engine(sqlite_url, busy_timeout_ms=100)
    factory = make_session_factory(engine)
    accounts.add_user(factory, "ops@example.com")
    key = accounts.add_key(factory, keyring, "ops@example.com", "k", SECRET).id
    holder = sqlite3.connect(
        Path(sqlite_url.removeprefix("sqlite:///")), isolation_level=None, check_same_thread=False
    )
    row = {
        "date": "2026-11-25",
        "model": "a/x",
        "endpoint_id": "e",
        "provider_name": "P",
        "requests": 1,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "reasoning_tokens": 0,
        "usage": Decimal("0.5"),
        "byok_usage_inference": Decimal(0),
    }
    try:
        with FakeOpenRouter(today=TODAY) as fake:
            fake.add_key(SECRET, rows=[row])
            # The run has started (its ledger row committed): another writer takes the lock.
            fake.on_request = lambda _path, _query: holder.execute("BEGIN IMMEDIATE")
            settings = Settings().replace("openrouter", base_url=fake.base_url, max_attempts=1)
            with structlog.testing.capture_logs() as logs:
                summary = run_sync(factory, settings, keyring)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    (outcome,) = summary.keys
    assert (outcome.status, outcome.reason) == ("failed", "database_busy")
    assert outcome.error is not None and "is locked by another process" in outcome.error
    failed = [e for e in logs if e["event"] == "key_sync_failed"]
    assert failed and "exc_info" not in failed[0]  # expected: one line, no traceback
    assert stored_usage_of(factory, key) == {}
    engine.dispose()
