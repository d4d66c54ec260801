"""The account commands end to end, through ``worker.cli.main`` in-process (the ``cli``
fixture) against a real SQLite file: exit codes, exact stdout and one-line stderr, the
database unchanged on errors; ``keys add`` verification against a respx-mocked ``GET /key``;
the hidden prompt and the confirmation on a terminal. The installed console script itself is
run as a real process in ``test_cli_entry.py`` and ``test_no_secret_leaks.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from worker.store.db import create_db_engine, make_session_factory
from worker.vault import accounts
from worker.vault.crypto import Keyring, generate_master_key, key_fingerprint

KEY = "sk-or-v1-" + "c3" * 32
BASE_URL = "https://openrouter.test/api/v1"
PREFIX = "OPENROUTER_WATCHER_"
Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py
ADD = ("keys", "add", "--user", "alice@example.com", "--name", "prod")


@pytest.fixture(autouse=True)
def configured(cli: Cli, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, master_key: str) -> None:
    """What every command here runs with: the test database, the master key, a mocked API."""
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_ENCRYPTION_KEY", master_key)
    monkeypatch.setenv("OPENROUTER_WATCHER_OPENROUTER_BASE_URL", BASE_URL)
    monkeypatch.setenv("OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("OPENROUTER_WATCHER_LOGGING_LEVEL", "WARNING")


@pytest.fixture
def db_path(sqlite_url: str) -> Path:
    return Path(sqlite_url.removeprefix("sqlite:///"))


def ok(result: tuple[int, str, str]) -> str:
    """The stdout of a command that must succeed silently on stderr."""
    code, out, err = result
    assert (code, err) == (0, ""), err
    return out


def dump(db_path: Path) -> list[str]:
    """Every row of the database as SQL text: equal dumps mean nothing changed."""
    with sqlite3.connect(db_path) as conn:
        return list(conn.iterdump())


def test_generate_key_prints_a_base64_256_bit_key_without_any_config(cli: Cli) -> None:
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith(PREFIX)}
    env["OPENROUTER_WATCHER_DATABASE_URL"] = "not a url"  # not even read
    keys = [ok(cli("generate-key", env=env)).strip() for _ in range(2)]
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)
    assert keys[0] != keys[1]


def test_operator_flow(cli: Cli, db_path: Path, master_key: str) -> None:
    kid = key_fingerprint(base64.b64decode(master_key))
    assert ok(cli("users", "add", "alice@example.com")) == (
        "added user 1 alice@example.com without a password (cannot log in)\n"
    )
    assert "with a password" in ok(
        cli("users", "add", "bob@example.com", "--password-stdin", stdin="pa ss\n")
    )
    out = ok(cli(*ADD, "--no-verify", stdin=f"  {KEY}\n"))
    assert out.splitlines()[0] == (
        f"added key 1 'prod' for alice@example.com, encrypted with master key {kid}"
    )

    table = ok(cli("keys", "list")).splitlines()
    assert table[0].split() == [
        "ID",
        "USER",
        "NAME",
        "ACTIVE",
        "KIND",
        "MASTER",
        "KEY",
        "CREATED",
        "LAST",
        "USED",
    ]
    assert table[1].split()[:6] == ["1", "alice@example.com", "prod", "yes", "-", kid]
    keys = json.loads(ok(cli("keys", "list", "--user", "alice@example.com", "--json")))
    assert list(keys[0]) == [
        "id",
        "user_id",
        "user",
        "name",
        "active",
        "kind",
        "master_key_id",
        "created_at",
        "last_used_at",
    ]
    assert keys[0]["created_at"].endswith("Z") and keys[0]["last_used_at"] is None
    assert json.loads(ok(cli("keys", "list", "--user", "bob@example.com", "--json"))) == []

    users = json.loads(ok(cli("users", "list", "--json")))
    assert [(u["email"], u["has_password"], u["keys"]) for u in users] == [
        ("alice@example.com", False, 1),
        ("bob@example.com", True, 0),
    ]
    assert "alice@example.com" in ok(cli("users", "list"))

    assert ok(cli("keys", "disable", "1")) == "key 1 disabled\n"
    assert ok(cli("keys", "disable", "1")) == "key 1 was already disabled\n"
    assert json.loads(ok(cli("keys", "list", "--json")))[0]["active"] is False
    assert ok(cli("keys", "enable", "1")) == "key 1 enabled\n"
    assert ok(cli("users", "disable", "bob@example.com")) == "user bob@example.com disabled\n"
    assert "was already disabled" in ok(cli("users", "disable", "bob@example.com"))
    assert ok(cli("users", "enable", "bob@example.com")) == "user bob@example.com enabled\n"

    code, token, err = cli("tokens", "create", "--user", "alice@example.com", "--name", "ci")
    token = token.strip()
    assert code == 0 and token.startswith("orw_") and "shown only once" in err
    toks = json.loads(ok(cli("tokens", "list", "--json")))
    assert [(t["id"], t["user"], t["name"], t["active"]) for t in toks] == [
        (1, "alice@example.com", "ci", True)
    ]
    assert "ci" in ok(cli("tokens", "list"))
    assert "ci" in ok(cli("tokens", "list", "--user", "alice@example.com"))
    assert ok(cli("tokens", "revoke", "1")) == "token 1 revoked\n"
    assert "token 1 was already revoked" in ok(cli("tokens", "revoke", "1"))
    assert json.loads(ok(cli("tokens", "list", "--json")))[0]["active"] is False
    with sqlite3.connect(db_path) as conn:
        stored = conn.execute("SELECT token_hash FROM api_tokens").fetchone()[0]
    assert token not in stored and len(stored) == 64

    assert ok(cli("keys", "rotate-master")).startswith(
        f"re-encrypted 0 keys under master key {kid} (1 already were)"
    )
    assert ok(cli("keys", "remove", "1", "--yes")) == (
        "removed key 1 'prod' of alice@example.com and 0 usage rows\n"
    )
    assert json.loads(ok(cli("keys", "list", "--json"))) == []


def test_rotate_master_with_previous_keys(cli: Cli, db_path: Path, master_key: str) -> None:
    ok(cli("users", "add", "alice@example.com"))
    for name in ("a", "b"):
        add = ("keys", "add", "--user", "alice@example.com", "--name", name, "--no-verify")
        ok(cli(*add, stdin=KEY + name))
    new_key = generate_master_key()
    new_id = key_fingerprint(base64.b64decode(new_key))
    new = {"OPENROUTER_WATCHER_ENCRYPTION_KEY": new_key}

    # The new key alone cannot read the old rows: error names the row and key ids, no change.
    before = dump(db_path)
    old_id = key_fingerprint(base64.b64decode(master_key))
    assert cli("keys", "rotate-master", env=new) == (
        1,
        "",
        f"error: cannot decrypt api key 1: it was encrypted with master key {old_id}, "
        f"which is not configured (have: {new_id})\n",
    )
    assert dump(db_path) == before

    rotating = {**new, "OPENROUTER_WATCHER_ENCRYPTION_PREVIOUS_KEYS": master_key}
    out = ok(cli("keys", "rotate-master", env=rotating))
    assert out.splitlines()[0] == f"re-encrypted 2 keys under master key {new_id} (0 already were)"
    listed = json.loads(ok(cli("keys", "list", "--json", env=new)))
    assert {k["master_key_id"] for k in listed} == {new_id}
    ring = Keyring(base64.b64decode(new_key))
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT id, user_id, key_encrypted FROM api_keys ORDER BY id"
        ).fetchall()
    assert [ring.decrypt(s, user_id=u, key_id=i) for i, u, s in rows] == [KEY + "a", KEY + "b"]
    assert ok(cli("keys", "rotate-master", env=new)).startswith(
        f"re-encrypted 0 keys under master key {new_id} (2 already were)"
    )


BAD_INPUTS: list[tuple[str, list[str], str, str]] = [
    (
        "bad email",
        ["users", "add", "not-an-email"],
        "",
        "error: invalid email address 'not-an-email': expected name@domain.tld",
    ),
    (
        "duplicate email",
        ["users", "add", "Alice@example.com"],
        "",
        "error: user alice@example.com already exists",
    ),
    (
        "empty password",
        ["users", "add", "carol@example.com", "--password-stdin"],
        "\n",
        "error: --password-stdin given but stdin held no password",
    ),
    (
        "unknown user",
        ["keys", "add", "--user", "nobody@example.com", "--name", "x", "--no-verify"],
        KEY,
        "error: no user nobody@example.com: add it with "
        "`openrouter-watcher users add nobody@example.com`",
    ),
    (
        "disabled user",
        ["keys", "add", "--user", "off@example.com", "--name", "x", "--no-verify"],
        KEY,
        "error: user off@example.com is disabled: enable it with "
        "`openrouter-watcher users enable off@example.com`",
    ),
    (
        "duplicate key name",
        ["keys", "add", "--user", "alice@example.com", "--name", "prod", "--no-verify"],
        KEY,
        "error: user alice@example.com already has a key named 'prod' (id 1)",
    ),
    (
        "empty key",
        ["keys", "add", "--user", "alice@example.com", "--name", "x", "--no-verify"],
        "  \n",
        "error: no OpenRouter key given: pipe it on stdin or type it at the prompt",
    ),
    (
        "not a key",
        ["keys", "add", "--user", "alice@example.com", "--name", "x", "--no-verify"],
        "hunter2\n",
        "error: that is not an OpenRouter key: keys begin with the sk-or prefix and contain no "
        "spaces",
    ),
    (
        "key on argv",
        ["keys", "add", "--user", "alice@example.com", "--name", "x", KEY],
        "",
        "error: unrecognized arguments: [REDACTED] (see openrouter-watcher --help)",
    ),
    (
        "unknown key id",
        ["keys", "disable", "99"],
        "",
        "error: no key with id 99: see `openrouter-watcher keys list`",
    ),
    (
        "key id not a number",
        ["keys", "enable", "x"],
        "",
        "error: argument id: 'x' is not an id (a positive number) "
        "(see openrouter-watcher keys enable --help)",
    ),
    (
        "remove without --yes",
        ["keys", "remove", "1"],
        "",
        "error: keys remove 1 deletes the key and its usage history: add --yes to confirm when "
        "not on a terminal",
    ),
    (
        "remove unknown",
        ["keys", "remove", "42", "--yes"],
        "",
        "error: no key with id 42: see `openrouter-watcher keys list`",
    ),
    (
        "unknown token",
        ["tokens", "revoke", "7"],
        "",
        "error: no token with id 7: see `openrouter-watcher tokens list`",
    ),
    (
        "token for disabled user",
        ["tokens", "create", "--user", "off@example.com", "--name", "x"],
        "",
        "error: user off@example.com is disabled: enable it with "
        "`openrouter-watcher users enable off@example.com`",
    ),
    (
        "unknown user for enable",
        ["users", "enable", "nobody@example.com"],
        "",
        "error: no user nobody@example.com: add it with "
        "`openrouter-watcher users add nobody@example.com`",
    ),
    (
        "list keys of unknown user",
        ["keys", "list", "--user", "nobody@example.com"],
        "",
        "error: no user nobody@example.com: add it with "
        "`openrouter-watcher users add nobody@example.com`",
    ),
]


@pytest.fixture
def seeded(sqlite_url: str, db_path: Path, keyring: Keyring) -> list[str]:
    """Alice with key 1 'prod', and a disabled user: the database dump.

    Stored through the library, not the command line: the flow above tests those commands,
    and every case below starts from this seed.
    """
    engine = create_db_engine(sqlite_url)
    factory = make_session_factory(engine)
    accounts.add_user(factory, "alice@example.com")
    accounts.add_user(factory, "off@example.com")
    accounts.set_user_active(factory, "off@example.com", False)
    accounts.add_key(factory, keyring, "alice@example.com", "prod", KEY)
    engine.dispose()
    return dump(db_path)


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    cli: Cli, db_path: Path, seeded: list[str], argv: list[str], stdin: str, message: str
) -> None:
    assert cli(*argv, stdin=stdin) == (2, "", message + "\n")
    assert dump(db_path) == seeded


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OPENROUTER_WATCHER_ENCRYPTION_KEY": None},
            "error: no master key configured: set OPENROUTER_WATCHER_ENCRYPTION_KEY, ",
        ),
        (
            {"OPENROUTER_WATCHER_ENCRYPTION_KEY": "bm90IGEga2V5"},
            "error: the master key from [encryption] key (or "
            "OPENROUTER_WATCHER_ENCRYPTION_KEY) is 9 bytes, expected 32",
        ),
        (
            {
                "OPENROUTER_WATCHER_ENCRYPTION_KEY": None,
                "OPENROUTER_WATCHER_ENCRYPTION_KEY_FILE": "{tmp}/missing.key",
            },
            "error: [encryption] key_file {tmp}/missing.key does not exist",
        ),
    ],
    ids=["none", "too short", "missing file"],
)
@pytest.mark.parametrize(
    "argv",
    [[*ADD[:-1], "new", "--no-verify"], ["keys", "rotate-master"]],
    ids=["keys add", "rotate-master"],
)
def test_commands_needing_a_master_key_exit_2_without_one(
    cli: Cli,
    db_path: Path,
    seeded: list[str],
    tmp_path: Path,
    env: dict[str, str | None],
    message: str,
    argv: list[str],
) -> None:
    env = {k: v.format(tmp=tmp_path) if v else v for k, v in env.items()}
    code, out, err = cli(*argv, stdin=KEY, env=env)
    assert (code, out) == (2, "")
    assert err.startswith(message.format(tmp=tmp_path))
    assert len(err.splitlines()) == 1
    assert dump(db_path) == seeded


def test_key_file_readable_by_others_is_refused(
    cli: Cli, seeded: list[str], tmp_path: Path, master_key: str
) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(master_key + "\n")
    key_file.chmod(0o644)
    env = {
        "OPENROUTER_WATCHER_ENCRYPTION_KEY": None,
        "OPENROUTER_WATCHER_ENCRYPTION_KEY_FILE": str(key_file),
    }
    assert cli("keys", "rotate-master", env=env) == (
        2,
        "",
        f"error: [encryption] key_file {key_file} is readable by group or "
        f"others (mode 0644): run chmod 600 {key_file}\n",
    )
    key_file.chmod(0o600)
    assert "re-encrypted 0 keys" in ok(cli("keys", "rotate-master", env=env))


def test_systemd_credential_is_used(
    cli: Cli, seeded: list[str], tmp_path: Path, master_key: str
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "encryption-key").write_text(master_key)
    env = {"OPENROUTER_WATCHER_ENCRYPTION_KEY": None, "CREDENTIALS_DIRECTORY": str(creds)}
    assert "(1 already were)" in ok(cli("keys", "rotate-master", env=env))


# --- respx-mocked GET /key, terminal prompts --------------------------------------------------


def key_body(*, management: bool, limit: Any = 100, remaining: Any = 74.5) -> dict[str, Any]:
    return {
        "data": {
            "label": "sk-or-v1-c3c...3c3",
            "is_management_key": management,
            "limit": limit,
            "limit_remaining": remaining,
            "usage": 25.5,
            "is_free_tier": False,
            "is_provisioning_key": False,
        }
    }


@pytest.fixture
def alice(cli: Cli) -> None:
    ok(cli("users", "add", "alice@example.com"))


@pytest.mark.parametrize(
    ("management", "kind", "line"),
    [
        (
            True,
            "management",
            "management key '[REDACTED]...3c3': per-model history available; "
            "limit $100.00, remaining $74.50, usage $25.50",
        ),
        (
            False,
            "ordinary",
            "ordinary key '[REDACTED]...3c3': limit $100.00, remaining $74.50, usage "
            "$25.50; per-model history needs a management key",
        ),
    ],
)
def test_keys_add_verifies_with_get_key(
    cli: Cli, alice: None, management: bool, kind: str, line: str
) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(f"{BASE_URL}/key").respond(200, json=key_body(management=management))
        code, out, err = cli(*ADD, stdin=KEY + "\n")
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == line
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    code, out, _ = cli("keys", "list", "--json")
    assert json.loads(out)[0]["kind"] == kind


def test_keys_add_shows_money_to_the_cent_with_separators(cli: Cli, alice: None) -> None:
    """OpenRouter answers with 9 decimals; a person reads dollars and cents (issue 16)."""
    body = key_body(management=True, limit=20000, remaining=6483.629816819)
    body["data"]["usage"] = 13516.370183181
    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"{BASE_URL}/key").respond(200, json=body)
        out = ok(cli(*ADD, stdin=KEY))
    assert out.splitlines()[1].endswith("limit $20,000.00, remaining $6,483.63, usage $13,516.37")


FIRST_DAY = dt.date(2026, 1, 1)


def test_keys_remove_counts_the_rows_with_separators(
    cli: Cli, alice: None, sqlite_url: str
) -> None:
    ok(cli(*ADD, "--no-verify", stdin=KEY))
    engine = create_db_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO usage_stats (api_key_id, date, model) VALUES (1, ?, ?)",
            [(str(FIRST_DAY + dt.timedelta(days=n // 10)), f"m/{n % 10}") for n in range(1_234)],
        )
    engine.dispose()
    out = ok(cli("keys", "remove", "1", "--yes"))
    assert out == "removed key 1 'prod' of alice@example.com and 1,234 usage rows\n"


def test_keys_add_with_no_limit(cli: Cli, alice: None) -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"{BASE_URL}/key").respond(
            200, json=key_body(management=True, limit=None, remaining=None)
        )
        code, out, _err = cli(*ADD, stdin=KEY)
    assert code == 0 and "limit none, remaining none" in out


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(
                401, json={"error": {"code": 401, "message": "No auth credentials found"}}
            ),
            "cannot verify the key with OpenRouter:",
        ),
        (httpx.ConnectError("connection refused"), "cannot verify the key with OpenRouter:"),
    ],
)
def test_keys_add_stores_nothing_when_verification_fails(
    cli: Cli, alice: None, db_path: Path, response: Any, message: str
) -> None:
    before = dump(db_path)
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(f"{BASE_URL}/key")
        if isinstance(response, Exception):
            route.side_effect = response
        else:
            route.return_value = response
        code, out, err = cli(*ADD, stdin=KEY)
    assert (code, out) == (1, "")
    assert err.startswith("error: " + message)
    assert err.rstrip().endswith(
        "nothing was stored (--no-verify stores a key without checking it)"
    )
    assert len(err.splitlines()) == 1 and KEY not in err
    assert route.call_count == 1
    assert dump(db_path) == before


def test_unknown_user_is_reported_before_any_request(cli: Cli, alice: None) -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(f"{BASE_URL}/key").respond(200, json=key_body(management=True))
        code, _out, err = cli("keys", "add", "--user", "bob@example.com", "--name", "x", stdin=KEY)
    assert code == 2 and "no user bob@example.com" in err
    assert route.call_count == 0


class TtyIn(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_keys_add_on_a_terminal_uses_a_hidden_prompt(
    cli: Cli, alice: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str, stream: Any = None) -> str:
        prompts.append(prompt)
        return KEY

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    code, out, _err = cli(*ADD, "--no-verify", stdin=TtyIn(""))
    assert code == 0 and prompts == ["OpenRouter key (hidden): "]
    assert KEY not in out


@pytest.mark.parametrize(("answer", "deleted"), [("y\n", True), ("\n", False), ("no\n", False)])
def test_keys_remove_asks_on_a_terminal(cli: Cli, alice: None, answer: str, deleted: bool) -> None:
    assert cli(*ADD, "--no-verify", stdin=KEY)[0] == 0
    code, out, err = cli("keys", "remove", "1", stdin=TtyIn(answer))
    assert code == 0
    assert err == "delete key 1 'prod' of alice@example.com and all its usage rows? [y/N] "
    assert out == (
        "removed key 1 'prod' of alice@example.com and 0 usage rows\n"
        if deleted
        else "nothing deleted\n"
    )
    remaining = json.loads(cli("keys", "list", "--json")[1])
    assert len(remaining) == (0 if deleted else 1)
