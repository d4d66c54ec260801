"""Engine, sessions and transaction scope."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from worker.db import create_db_engine, current_revision, get_db, head_revision, transaction
from worker.errors import DatabaseUnavailableError
from worker.models import User


def test_transaction_commits_at_the_end_of_the_block(
    session_factory: sessionmaker[Session],
) -> None:
    with transaction(session_factory) as session:
        session.add(User(email="t@example.com", password_hash="!"))
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_transaction_rolls_back_everything_when_the_block_raises(
    session_factory: sessionmaker[Session],
) -> None:
    with pytest.raises(RuntimeError), transaction(session_factory) as session:
        session.add(User(email="t@example.com", password_hash="!"))
        session.flush()
        raise RuntimeError("boom")
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0


def test_get_db_yields_a_session_and_always_closes_it(
    session_factory: sessionmaker[Session],
) -> None:
    dependency = get_db(session_factory)
    session = next(dependency)
    session.add(User(email="t@example.com", password_hash="!"))
    session.flush()
    assert session.in_transaction()
    with pytest.raises(StopIteration):
        next(dependency)  # the web layer finishing the request
    assert not session.in_transaction()  # closed: the uncommitted row was rolled back
    with session_factory() as fresh:
        assert fresh.scalar(select(func.count()).select_from(User)) == 0


def test_sessions_keep_loaded_values_after_commit(session_factory: sessionmaker[Session]) -> None:
    with transaction(session_factory) as session:
        user = User(email="t@example.com", password_hash="!")
        session.add(user)
    assert user.email == "t@example.com"  # expire_on_commit=False: no reload needed


def test_sqlite_connections_enforce_foreign_keys_wal_and_busy_timeout(tmp_path: Path) -> None:
    engine = create_db_engine(
        f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}", busy_timeout_ms=1234
    )
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 1234
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    assert (tmp_path / "nested" / "dir" / "x.db").exists()  # directory created on demand
    engine.dispose()


def test_migrated_database_is_at_head(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()


def test_unreachable_database_is_a_clear_error() -> None:
    engine = create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailableError, match=r"cannot reach the database .*127\.0\.0\.1"):
        current_revision(engine)
    engine.dispose()
