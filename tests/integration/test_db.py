"""Engine, sessions, transaction scope, and database errors wrapped in one place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from worker.core.errors import EXIT_RUNTIME, DatabaseUnavailableError
from worker.store.db import (
    HEAD_REVISION,
    check_schema,
    create_db_engine,
    current_revision,
    get_db,
    transaction,
)
from worker.store.models import User
from worker.testing.env import clean_env
from worker.testing.postgres import free_port

CLI = str(Path(sys.executable).parent / "openrouter-watcher")
PASSWORD = "s3cret-db-password"


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
    assert current_revision(engine) == HEAD_REVISION
    check_schema(engine)


def _unreachable_url() -> str:
    """A PostgreSQL URL, with a password, on a local port nothing listens on."""
    return f"postgresql+psycopg://watcher:{PASSWORD}@127.0.0.1:{free_port()}/watcher"


def test_unreachable_database_is_a_runtime_error_naming_the_url_without_its_password() -> None:
    engine = create_db_engine(_unreachable_url())
    with pytest.raises(DatabaseUnavailableError) as info:
        check_schema(engine)
    engine.dispose()
    error = info.value
    assert error.exit_code == EXIT_RUNTIME
    assert str(error).startswith("cannot reach the database postgresql+psycopg://watcher:***@")
    assert "Connection refused" in str(error) and "\n" not in str(error)
    assert PASSWORD not in str(error)
    assert isinstance(error.__cause__, psycopg.OperationalError)  # the driver's error, kept


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_connection_lost_mid_session_is_database_unavailable(engine: Engine, db_url: str) -> None:
    with engine.connect() as victim:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DatabaseUnavailableError, match=r"^lost the connection to the database"):
            victim.execute(text("SELECT 1"))
    # the pool threw the dead connection away: the next one works
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_statement_errors_are_not_mistaken_for_an_unavailable_database(engine: Engine) -> None:
    # SQLite reports a missing table as an OperationalError: on an open connection it is a
    # programming error, not an outage, and must not be retried as one.
    with engine.connect() as conn, pytest.raises(DBAPIError) as info:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert not isinstance(info.value, DatabaseUnavailableError)


@pytest.mark.parametrize("argv", [["status"], ["migrate"], ["users", "list"]])
def test_cli_against_an_unreachable_database_exits_1_with_one_line(
    tmp_path: Path, argv: list[str]
) -> None:
    env = clean_env(
        OPENROUTER_WATCHER_CONFIG=os.devnull,
        OPENROUTER_WATCHER_DATABASE_URL=_unreachable_url(),
        OPENROUTER_WATCHER_LOGGING_FORMAT="json",
    )
    result = subprocess.run(
        [CLI, *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach the database postgresql+psycopg://watcher:***@")
    assert PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
