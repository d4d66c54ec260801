"""Engine, sessions, transaction scope and the schema's revision.

One obvious way to scope a transaction: ``with transaction(session_factory) as session:`` —
it commits when the block ends and rolls back if it raises. ``get_db()`` is the generator a web
layer would inject. Alembic owns the schema: :func:`init_db` upgrades to head through Alembic's
API and :func:`check_schema` refuses to work on a database that is behind or unknown.

Every command checks the schema and importing Alembic costs about half a second, so
:func:`check_schema` reads the ``alembic_version`` table itself and compares it with
:data:`HEAD_REVISION`; Alembic is imported only by :func:`init_db` and :func:`downgrade_db`.
The migration scripts travel inside the package (``worker/migrations``, see
:func:`migrations_dir`), so an installed wheel migrates without a checkout.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, String, column, create_engine, event, inspect, select, table
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.core.errors import (
    ConfigError,
    DatabaseBusyError,
    DatabaseUnavailableError,
    SchemaError,
    WatcherError,
)

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# The newest revision in alembic/versions: bump it with every new migration (a test compares it
# with Alembic's own head, so a forgotten bump fails the suite, not a deployment).
HEAD_REVISION = "0011"
VERSION_TABLE = "alembic_version"
_VERSIONS = table(VERSION_TABLE, column("version_num", String))  # Alembic's, read without it


def create_db_engine(
    url: str, *, busy_timeout_ms: int = 5000, echo: bool = False, **kwargs: Any
) -> Engine:
    """An engine for SQLite or PostgreSQL (psycopg 3), with the pragmas SQLite needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            directory = Path(database).parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the directory {directory} for the SQLite database of "
                    f"[database] url: {exc.strerror}; choose a writable path"
                ) from None
        connect_args = {"check_same_thread": False, "timeout": busy_timeout_ms / 1000}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms))
    else:
        engine = create_engine(url, pool_pre_ping=True, **kwargs)
    if echo:
        # Not create_engine(echo=True), whose own handler prints statements to stdout past the
        # log pipeline: through the root logger they are masked like every other line.
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    event.listen(engine, "handle_error", _typed_database_errors)
    return engine


def _typed_database_errors(context: ExceptionContext) -> None:
    """The one place driver errors become :class:`DatabaseUnavailableError` (or, for SQLite's
    "database is locked", :class:`DatabaseBusyError`).

    A connection that cannot be opened (refused, timed out, the server starting up or shutting
    down) or that is lost mid-statement, and a database another process keeps locked, are
    run-time conditions that go away by themselves: the daemon retries, the CLI reports them
    in one line with exit code 1. Every other error (constraints, SQL) stays as it is.
    """
    if context.is_pre_ping:
        return  # the pool replaces a dead pooled connection by itself
    engine = context.engine
    url = engine.url.render_as_string(hide_password=True) if engine is not None else "(unknown)"
    sqlite = engine is not None and engine.dialect.name == "sqlite"
    if sqlite and is_locked(context.original_exception):
        raise busy_error(url)
    connecting = context.connection is None
    if not (connecting or context.is_disconnect):
        return
    if not isinstance(context.sqlalchemy_exception, OperationalError | InterfaceError):
        return
    what = "cannot reach the database" if connecting else "lost the connection to the database"
    check = "that its directory is writable" if sqlite else "that the server is running"
    raise DatabaseUnavailableError(
        f"{what} {url}: {_first_line(context.original_exception)}; check [database] url and {check}"
    )


def is_locked(exc: BaseException) -> bool:
    """SQLite's own words for another process holding the write lock past busy_timeout."""
    return "database is locked" in str(exc)


def busy_error(url: str) -> DatabaseBusyError:
    """SQLite's "database is locked", named: also raised for the store's raw driver calls,
    which SQLAlchemy's error hook never sees."""
    return DatabaseBusyError(
        f"the database {url} is locked by another process (waited [database] "
        "busy_timeout_ms): try again when it has finished"
    )


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    db = settings.database
    return create_db_engine(db.url, busy_timeout_ms=db.busy_timeout_ms, echo=db.echo, **kwargs)


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # Without this SQLite ignores ON DELETE CASCADE (and every foreign key) silently.
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets readers (status, report) run while the worker writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL never corrupts the database; a power loss may undo the last
        # commits, which the next sync fetches again (every write is an idempotent upsert of
        # what OpenRouter reports). FULL would fsync on every per-key commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    return on_connect


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit at the end of the block, roll back if it raises."""
    with factory() as session, session.begin():
        yield session


def get_db(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session and always close it (the dependency a web layer would inject)."""
    session = factory()
    try:
        yield session
    finally:
        session.close()


def migrations_dir() -> Path:
    """The Alembic scripts, found through the installed package (``worker/migrations``).

    A wheel carries them as package data; in a checkout ``worker/migrations`` is a symbolic
    link to the top-level ``alembic/`` directory, which stays where the project promises it
    (and where ``alembic.ini`` points for people running ``alembic`` by hand).
    """
    # Resolved, so that a checkout runs (and tracebacks and coverage name) alembic/ itself.
    path = Path(str(resources.files("worker").joinpath("migrations"))).resolve()
    if not (path / "env.py").is_file():
        raise WatcherError(
            f"the migration scripts are missing from the installed package ({path}): "
            "reinstall openrouter-watcher"
        )
    return path


def alembic_config(url: str | None = None) -> AlembicConfig:
    """Alembic's configuration for the packaged scripts (imports Alembic)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in ``alembic_version``, or None when the table is absent or empty.

    Read directly rather than through Alembic's MigrationContext, which would import Alembic.
    """
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        versions = list(conn.scalars(select(_VERSIONS.c.version_num)))
    # One row on a linear history; several (branches merged by hand) are shown as they are.
    return ", ".join(sorted(versions)) or None


def init_db(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: head) with Alembic."""
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade_db(engine: Engine, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def check_schema(engine: Engine) -> None:
    """Stop with a clear message unless the database is at the code's head revision."""
    current = current_revision(engine)
    head = HEAD_REVISION
    if current == head:
        return
    if current is None:
        tables = inspect(engine).get_table_names()
        state = "has no schema" if not tables else "has tables but no Alembic revision"
        raise SchemaError(f"database {state}, code expects revision {head}: run make migrate")
    raise SchemaError(f"database is at revision {current}, code expects {head}: run make migrate")


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc and str(exc).strip() else "unknown error"
