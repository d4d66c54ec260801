"""The PostgreSQL tests share one database per worker, emptied between tests: emptied means
exactly as cloned (no row, identities restarted), and a changed schema or setting is never
handed on."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from worker.core.errors import DatabaseUnavailableError
from worker.store.db import create_db_engine
from worker.testing.postgres import PostgresServer

pytestmark = pytest.mark.postgres


@pytest.fixture
def clone(pg_server: PostgresServer, pg_template: str) -> Iterator[str]:
    pg_server.create_database("reuse_probe", template=pg_template)
    yield "reuse_probe"
    pg_server.drop_database("reuse_probe")


def _rows_and_next_id(url: str, email: str = "a@example.com") -> tuple[int, int]:
    """Add a user; the users then stored and the new one's id."""
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (email, password_hash) VALUES (:email, 'x')"), {"email": email}
        )
        rows = conn.execute(text("SELECT count(*), max(id) FROM users")).one()
    engine.dispose()
    return int(rows[0]), int(rows[1])


def test_an_emptied_database_has_no_row_and_restarts_its_ids(
    pg_server: PostgresServer, clone: str
) -> None:
    schema = pg_server.fingerprint(clone)
    assert _rows_and_next_id(pg_server.url(clone)) == (1, 1)
    assert _rows_and_next_id(pg_server.url(clone), "b@example.com") == (2, 2)
    held = create_db_engine(pg_server.url(clone)).connect()  # a session left open

    assert pg_server.empty_for_reuse(clone, schema) is True

    assert _rows_and_next_id(pg_server.url(clone)) == (1, 1)
    with pytest.raises(DatabaseUnavailableError):  # its session was ended, not left holding locks
        held.execute(text("SELECT 1"))


@pytest.mark.parametrize(
    "change",
    [
        "CREATE TABLE extra (id int)",
        "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql; "
        "CREATE TRIGGER t AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()",
        "ALTER DATABASE reuse_probe SET idle_session_timeout = '1s'",
        "UPDATE alembic_version SET version_num = 'other'",
    ],
    ids=["table", "trigger", "setting", "revision"],
)
def test_a_changed_schema_or_setting_is_dropped_not_reused(
    pg_server: PostgresServer, clone: str, change: str
) -> None:
    schema = pg_server.fingerprint(clone)
    engine = create_db_engine(pg_server.url(clone))
    with engine.begin() as conn:
        conn.exec_driver_sql(change)
    engine.dispose()

    assert pg_server.empty_for_reuse(clone, schema) is False

    with psycopg.connect(pg_server.dsn()) as conn:
        gone = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (clone,))
        assert gone.fetchone() == (0,)
