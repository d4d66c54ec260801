"""Shared fixtures: databases (SQLite file and a real PostgreSQL server), sessions, samples.

The ``db_url`` fixture is parametrised over ``sqlite`` and ``postgres``: a test that takes it
(or ``engine``, ``session_factory``, ``session``) runs on both. The PostgreSQL server is started
once per test session by :class:`worker.testing.postgres.PostgresServer`; every test gets a
fresh database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.db import create_db_engine, init_db, make_session_factory
from worker.models import ApiKey, User
from worker.testing.postgres import PostgresServer, find_bindir

_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark by directory (unit / integration) and mark every PostgreSQL case `postgres`."""
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgres" in callspec.id.split("-"):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (initdb, postgres) found: set PG_BINDIR")
    server = PostgresServer(bindir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A database migrated to head, cloned for every test (much faster than migrating)."""
    url = pg_server.create_database("template_head")
    engine = create_db_engine(url)
    init_db(engine)
    engine.dispose()
    return "template_head"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "head.db"
    engine = create_db_engine(f"sqlite:///{path}")
    init_db(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh SQLite file at the head revision."""
    path = tmp_path / "watcher.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, pg_server: PostgresServer,
                 pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the head revision."""
    name = f"t{next(_counter)}"
    url = pg_server.create_database(name, template=pg_template)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def empty_postgres_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (no schema): for migration tests."""
    name = f"e{next(_counter)}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL: the test runs once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def sample_user(session: Session) -> User:
    user = User(email="alice@example.com", password_hash="!unusable")
    session.add(user)
    session.commit()
    return user


@pytest.fixture
def sample_key(session: Session, sample_user: User) -> ApiKey:
    # The ciphertext is not decryptable: tests that need a real one build it with worker.crypto.
    key = ApiKey(user_id=sample_user.id, name="production", key_encrypted="v1:test:AAAA")
    session.add(key)
    session.commit()
    return key


# Appended by issue 3 (keys at rest): a master key and its keyring for any test that encrypts.
import base64  # noqa: E402

from worker.crypto import Keyring, generate_master_key  # noqa: E402


@pytest.fixture
def master_key() -> str:
    """A fresh base64 master key (what `generate-key` prints)."""
    return generate_master_key()


@pytest.fixture
def keyring(master_key: str) -> Keyring:
    """A keyring holding only ``master_key``."""
    return Keyring.from_keys(base64.b64decode(master_key))
