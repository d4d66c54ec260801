"""The admin flag on users (migration 0006): set and shown by the CLI, kept across migrations."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import text

from worker import cli
from worker.store.db import create_db_engine, downgrade_db, init_db


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def configured(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The in-process CLI reads its configuration from the environment, as the script does."""
    monkeypatch.setenv("OPENROUTER_WATCHER_CONFIG", "/dev/null")
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_LOGGING_LEVEL", "WARNING")
    return sqlite_url


def test_users_add_admin_and_users_admin_set_revoke_and_show_the_flag(configured: str) -> None:
    assert run_cli("users", "add", "alice@example.com", "--admin")[:2] == (
        0,
        "added admin user 1 alice@example.com without a password (cannot log in)\n",
    )
    assert run_cli("users", "add", "bob@example.com")[0] == 0

    code, out, _ = run_cli("users", "list", "--json")
    assert code == 0
    assert [(u["email"], u["admin"]) for u in json.loads(out)] == [
        ("alice@example.com", True),
        ("bob@example.com", False),
    ]
    assert list(json.loads(out)[0])[:4] == ["id", "email", "active", "admin"]

    assert run_cli("users", "admin", "Bob@Example.com")[:2] == (
        0,
        "user bob@example.com is now an admin\n",
    )
    assert run_cli("users", "admin", "bob@example.com")[1] == (
        "user bob@example.com was already an admin\n"
    )
    code, out, _ = run_cli("users", "list")
    header, _alice, bob = out.splitlines()
    assert header.split()[:4] == ["ID", "EMAIL", "ACTIVE", "ADMIN"]
    assert bob.split()[:4] == ["2", "bob@example.com", "yes", "yes"]

    assert run_cli("users", "admin", "bob@example.com", "--revoke")[1] == (
        "user bob@example.com is no longer an admin\n"
    )
    code, out, err = run_cli("users", "admin", "carol@example.com")
    assert (code, out) == (2, "")
    assert err.startswith("error: no user carol@example.com")


def test_0006_adds_is_admin_false_and_its_downgrade_keeps_users_and_their_keys(
    empty_url: str,
) -> None:
    engine = create_db_engine(empty_url)
    init_db(engine, "0005")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (email, password_hash) VALUES ('a@example.com', '!')"))
        conn.execute(
            text(
                "INSERT INTO api_keys (user_id, name, key_encrypted) "
                "SELECT id, 'k', 'v1:test:AAAA' FROM users"
            )
        )
    init_db(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT email, is_admin FROM users")).one() == (
            "a@example.com",
            False,
        )
    downgrade_db(engine, "0005")
    with engine.connect() as conn:
        # users was altered in place, not rebuilt: its rows and the keys that cascade from it stay
        assert conn.execute(text("SELECT count(*) FROM users")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar_one() == 1
        columns = conn.execute(text("SELECT * FROM users")).keys()
        assert "is_admin" not in columns
    engine.dispose()
