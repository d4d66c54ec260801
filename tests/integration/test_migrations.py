"""Alembic owns the schema: migrations run both ways and match the models exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from worker.core.errors import SchemaError
from worker.store.db import (
    HEAD_REVISION,
    alembic_config,
    check_schema,
    create_db_engine,
    current_revision,
    downgrade_db,
    init_db,
    migrations_dir,
)
from worker.store.models import Base
from worker.testing.env import clean_env

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"users", "api_keys", "usage_stats", "api_tokens", "sync_runs", "sync_key_results"}


def _diff(engine: object) -> list[object]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_upgrade_downgrade_upgrade_round_trip(empty_url: str) -> None:
    engine = create_db_engine(empty_url)
    init_db(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    downgrade_db(engine, "base")
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
    init_db(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    check_schema(engine)
    engine.dispose()


def test_models_and_migrations_do_not_drift(empty_url: str) -> None:
    engine = create_db_engine(empty_url)
    init_db(engine)
    assert _diff(engine) == []
    engine.dispose()


def test_first_revision_is_the_original_design(empty_url: str) -> None:
    engine = create_db_engine(empty_url)
    init_db(engine, "0001")
    inspector = inspect(engine)
    assert {"users", "api_keys", "usage_stats", "api_tokens"} <= set(inspector.get_table_names())
    cost = {c["name"]: c for c in inspector.get_columns("usage_stats")}["cost"]
    assert (cost["type"].precision, cost["type"].scale) == (10, 6)
    uniques = {u["name"] for u in inspector.get_unique_constraints("usage_stats")}
    assert "uniq_key_date_model" in uniques
    checks = {c["name"] for c in inspector.get_check_constraints("users")}
    assert "chk_email_format" in checks
    engine.dispose()


def test_upgrade_from_0001_keeps_existing_rows_and_widens_cost(empty_url: str) -> None:
    from decimal import Decimal

    from sqlalchemy import text

    engine = create_db_engine(empty_url)
    init_db(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (email, password_hash) VALUES ('a@example.com','x')"))
        conn.execute(text("INSERT INTO api_keys (user_id, name, key_encrypted) VALUES (1,'k','c')"))
        conn.execute(
            text(
                "INSERT INTO usage_stats (api_key_id, date, model, cost) "
                "VALUES (1, '2026-01-01', 'm', 9999.999999)"
            )
        )
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE usage_stats SET cost = 123456.123456789"))
        users = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
        keys = conn.execute(text("SELECT count(*) FROM api_keys")).scalar_one()
        cost = conn.execute(text("SELECT cost FROM usage_stats")).scalar_one()
    assert (users, keys) == (1, 1)
    assert Decimal(str(cost)) == Decimal("123456.123456789")
    engine.dispose()


def test_check_schema_names_revision_and_fix(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(SchemaError, match=r"has no schema.*run make migrate"):
        check_schema(engine)
    init_db(engine, "0001")
    with pytest.raises(SchemaError) as info:
        check_schema(engine)
    assert str(info.value) == (
        f"database is at revision 0001, code expects {HEAD_REVISION}: run make migrate"
    )
    assert info.value.exit_code == 2
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaError, match=r"has tables but no Alembic revision.*make migrate"):
        check_schema(engine)
    engine.dispose()


def test_head_revision_constant_is_alembics_head() -> None:
    # HEAD_REVISION spares every command Alembic's import: bump it with each new migration.
    scripts = ScriptDirectory(str(ROOT / "alembic"))
    assert scripts.get_current_head() == HEAD_REVISION
    # ... and the package finds those very scripts (worker/migrations -> alembic/).
    assert migrations_dir() == (ROOT / "alembic").resolve()
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_schema_check_does_not_import_alembic(sqlite_url: str, tmp_path: Path) -> None:
    # What every command pays: `status` checks the schema; Alembic's import costs ~0.5 s.
    program = (
        "import sys\n"
        "from worker.cli import main\n"
        "code = main(['status'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'alembic')\n"
        "print('ALEMBIC', code, loaded)\n"
    )
    env = clean_env(
        OPENROUTER_WATCHER_CONFIG=os.devnull, OPENROUTER_WATCHER_DATABASE_URL=sqlite_url
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "ALEMBIC 0 []" in result.stdout.splitlines(), result.stdout + result.stderr


def test_top_level_alembic_ini_still_works_by_hand(tmp_path: Path) -> None:
    # People run `alembic upgrade head` from the checkout: alembic.ini stays at the top.
    url = f"sqlite:///{tmp_path / 'by-hand.db'}"
    env = clean_env(OPENROUTER_WATCHER_CONFIG=os.devnull, OPENROUTER_WATCHER_DATABASE_URL=url)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    engine = create_db_engine(url)
    assert current_revision(engine) == HEAD_REVISION
    engine.dispose()
