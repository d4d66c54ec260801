"""Alembic environment: metadata from the models, URL from the worker's configuration.

``worker.store.db.init_db`` hands in an open connection through ``config.attributes``; the
``alembic`` command line (``make migrate`` uses the worker's ``migrate`` command instead) builds
a NullPool engine from the worker's settings. Batch mode is used on SQLite only, where ALTER
TABLE is weak.
"""

from __future__ import annotations

from sqlalchemy import Connection, pool

from alembic import context
from worker.config import load_settings
from worker.store.db import create_db_engine
from worker.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or load_settings().database.url
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or load_settings().database.url
    engine = create_db_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
