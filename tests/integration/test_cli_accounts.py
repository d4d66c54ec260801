"""The account commands end to end.

Through the installed console script in a subprocess against a real SQLite file (exit codes,
stdout, stderr, database unchanged on errors), and in-process through ``worker.cli.main`` for
what a subprocess cannot fake: ``keys add`` verification against a respx-mocked ``GET /key``,
the hidden prompt and the confirmation on a terminal.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from worker import cli
from worker.crypto import Keyring, generate_master_key, key_fingerprint
from worker.testing.env import clean_env

SCRIPT = Path(sys.executable).parent / "openrouter-watcher"
KEY = "sk-or-v1-" + "c3" * 32
BASE_URL = "https://openrouter.test/api/v1"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def db_path(sqlite_url: str) -> Path:
    return Path(sqlite_url.removeprefix("sqlite:///"))


@pytest.fixture
def run(sqlite_url: str, master_key: str, tmp_path: Path) -> Run:
    """Run the console script with the test database and master key; stdin from ``input``."""

    def _run(
        *args: str, input: str = "", env: dict[str, str] | None = None, key: str | None = master_key
    ) -> subprocess.CompletedProcess[str]:
        base = {
            "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
            "OPENROUTER_WATCHER_LOGGING_LEVEL": "WARNING",
        }
        if key is not None:
            base["OPENROUTER_WATCHER_ENCRYPTION_KEY"] = key
        base.update(env or {})
        return subprocess.run(
            [str(SCRIPT), *args],
            input=input,
            capture_output=True,
            text=True,
            env=clean_env(**base),
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    return _run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def dump(db_path: Path) -> list[str]:
    """Every row of the database as SQL text: equal dumps mean nothing changed."""
    with sqlite3.connect(db_path) as conn:
        return list(conn.iterdump())


def test_generate_key_prints_a_base64_256_bit_key_without_any_config(tmp_path: Path) -> None:
    env = clean_env(OPENROUTER_WATCHER_DATABASE_URL="not a url")  # not even read
    results = [
        subprocess.run(
            [str(SCRIPT), "generate-key"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
            timeout=60,
        )
        for _ in range(2)
    ]
    keys = [r.stdout.strip() for r in results]
    assert [r.returncode for r in results] == [0, 0]
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)
    assert keys[0] != keys[1]


def test_operator_flow(run: Run, db_path: Path, master_key: str) -> None:
    kid = key_fingerprint(base64.b64decode(master_key))
    assert ok(run("users", "add", "alice@example.com")) == (
        "added user 1 alice@example.com without a password (cannot log in)\n"
    )
    assert "with a password" in ok(
        run("users", "add", "bob@example.com", "--password-stdin", input="pa ss\n")
    )
    out = ok(
        run(
            "keys",
            "add",
            "--user",
            "alice@example.com",
            "--name",
            "prod",
            "--no-verify",
            input=f"  {KEY}\n",
        )
    )
    assert out.splitlines()[0] == (
        f"added key 1 'prod' for alice@example.com, encrypted with master key {kid}"
    )

    table = ok(run("keys", "list")).splitlines()
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
    keys = json.loads(ok(run("keys", "list", "--user", "alice@example.com", "--json")))
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
    assert json.loads(ok(run("keys", "list", "--user", "bob@example.com", "--json"))) == []

    users = json.loads(ok(run("users", "list", "--json")))
    assert [(u["email"], u["has_password"], u["keys"]) for u in users] == [
        ("alice@example.com", False, 1),
        ("bob@example.com", True, 0),
    ]
    assert "alice@example.com" in ok(run("users", "list"))

    assert ok(run("keys", "disable", "1")) == "key 1 disabled\n"
    assert ok(run("keys", "disable", "1")) == "key 1 was already disabled\n"
    assert json.loads(ok(run("keys", "list", "--json")))[0]["active"] is False
    assert ok(run("keys", "enable", "1")) == "key 1 enabled\n"
    assert ok(run("users", "disable", "bob@example.com")) == "user bob@example.com disabled\n"
    assert ok(run("users", "enable", "bob@example.com")) == "user bob@example.com enabled\n"

    created = run("tokens", "create", "--user", "alice@example.com", "--name", "ci")
    token = ok(created).strip()
    assert token.startswith("orw_") and "shown only once" in created.stderr
    toks = json.loads(ok(run("tokens", "list", "--json")))
    assert [(t["id"], t["user"], t["name"], t["active"]) for t in toks] == [
        (1, "alice@example.com", "ci", True)
    ]
    assert "ci" in ok(run("tokens", "list", "--user", "alice@example.com"))
    assert ok(run("tokens", "revoke", "1")) == "token 1 revoked\n"
    assert json.loads(ok(run("tokens", "list", "--json")))[0]["active"] is False
    with sqlite3.connect(db_path) as conn:
        stored = conn.execute("SELECT token_hash FROM api_tokens").fetchone()[0]
    assert token not in stored and len(stored) == 64

    assert ok(run("keys", "remove", "1", "--yes")) == (
        "removed key 1 'prod' of alice@example.com and 0 usage rows\n"
    )
    assert json.loads(ok(run("keys", "list", "--json"))) == []


def test_rotate_master_with_previous_keys(run: Run, db_path: Path, master_key: str) -> None:
    ok(run("users", "add", "alice@example.com"))
    for name in ("a", "b"):
        ok(
            run(
                "keys",
                "add",
                "--user",
                "alice@example.com",
                "--name",
                name,
                "--no-verify",
                input=KEY + name,
            )
        )
    new_key = generate_master_key()
    new_id = key_fingerprint(base64.b64decode(new_key))

    # The new key alone cannot read the old rows: error names the row and key ids, no change.
    before = dump(db_path)
    failed = run("keys", "rotate-master", key=new_key)
    old_id = key_fingerprint(base64.b64decode(master_key))
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        f"error: cannot decrypt api key 1: it was encrypted with master key {old_id}, "
        f"which is not configured (have: {new_id})"
    )
    assert dump(db_path) == before

    rotating = {"OPENROUTER_WATCHER_ENCRYPTION_PREVIOUS_KEYS": master_key}
    out = ok(run("keys", "rotate-master", key=new_key, env=rotating))
    assert out.splitlines()[0] == f"re-encrypted 2 keys under master key {new_id} (0 already were)"
    assert {k["master_key_id"] for k in json.loads(ok(run("keys", "list", "--json")))} == {new_id}
    ring = Keyring(base64.b64decode(new_key))
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT id, user_id, key_encrypted FROM api_keys ORDER BY id"
        ).fetchall()
    assert [ring.decrypt(s, user_id=u, key_id=i) for i, u, s in rows] == [KEY + "a", KEY + "b"]
    assert ok(run("keys", "rotate-master", key=new_key)).startswith(
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
def seeded(run: Run, db_path: Path) -> list[str]:
    ok(run("users", "add", "alice@example.com"))
    ok(run("users", "add", "off@example.com"))
    ok(run("users", "disable", "off@example.com"))
    ok(
        run(
            "keys", "add", "--user", "alice@example.com", "--name", "prod", "--no-verify", input=KEY
        )
    )
    return dump(db_path)


def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    run: Run, db_path: Path, seeded: list[str]
) -> None:
    # One seeded database for every case (each subprocess costs most of a second); the dump
    # after each case is compared with the seed, so a case that wrote anything is caught.
    problems = []
    for case, argv, stdin, message in BAD_INPUTS:
        result = run(*argv, input=stdin)
        got = (result.returncode, result.stdout, result.stderr)
        if got != (2, "", message + "\n"):
            problems.append(f"{case}: got {got!r}")
        if dump(db_path) != seeded:
            problems.append(f"{case}: the database changed")
    assert problems == []


def test_commands_needing_a_master_key_exit_2_without_one(
    run: Run, db_path: Path, seeded: list[str], tmp_path: Path
) -> None:
    cases: list[tuple[str | None, dict[str, str], str]] = [
        (None, {}, "error: no master key configured: set OPENROUTER_WATCHER_ENCRYPTION_KEY, "),
        (
            "bm90IGEga2V5",
            {},
            "error: the master key from [encryption] key (or "
            "OPENROUTER_WATCHER_ENCRYPTION_KEY) is 9 bytes, expected 32",
        ),
        (
            None,
            {"OPENROUTER_WATCHER_ENCRYPTION_KEY_FILE": str(tmp_path / "missing.key")},
            f"error: [encryption] key_file {tmp_path / 'missing.key'} does not exist",
        ),
    ]
    for key, env, message in cases:
        for argv in (
            ["keys", "add", "--user", "alice@example.com", "--name", "new", "--no-verify"],
            ["keys", "rotate-master"],
        ):
            result = run(*argv, input=KEY, key=key, env=env)
            assert result.returncode == 2, (argv, key, env)
            assert result.stderr.startswith(message)
            assert len(result.stderr.splitlines()) == 1
    assert dump(db_path) == seeded


def test_key_file_readable_by_others_is_refused(
    run: Run, seeded: list[str], tmp_path: Path, master_key: str
) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(master_key + "\n")
    key_file.chmod(0o644)
    env = {"OPENROUTER_WATCHER_ENCRYPTION_KEY_FILE": str(key_file)}
    result = run("keys", "rotate-master", key=None, env=env)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: [encryption] key_file {key_file} is readable by group or "
        f"others (mode 0644): run chmod 600 {key_file}\n"
    )
    key_file.chmod(0o600)
    assert "re-encrypted 0 keys" in ok(run("keys", "rotate-master", key=None, env=env))


def test_systemd_credential_is_used(
    run: Run, seeded: list[str], tmp_path: Path, master_key: str
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "encryption-key").write_text(master_key)
    out = ok(run("keys", "rotate-master", key=None, env={"CREDENTIALS_DIRECTORY": str(creds)}))
    assert "(1 already were)" in out


# --- in process: respx-mocked GET /key, terminal prompts ------------------------------------


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
def inproc(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, master_key: str, tmp_path: Path
) -> Callable[..., tuple[int, str, str]]:
    for var in [v for v in os.environ if v.startswith("OPENROUTER_WATCHER_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_ENCRYPTION_KEY", master_key)
    monkeypatch.setenv("OPENROUTER_WATCHER_OPENROUTER_BASE_URL", BASE_URL)
    monkeypatch.setenv("OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("OPENROUTER_WATCHER_LOGGING_LEVEL", "WARNING")

    def _main(*argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(list(argv), stdin=stdin or io.StringIO(""), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    assert _main("users", "add", "alice@example.com")[0] == 0
    return _main


ADD = ("keys", "add", "--user", "alice@example.com", "--name", "prod")


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
    inproc: Callable[..., tuple[int, str, str]], management: bool, kind: str, line: str
) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(f"{BASE_URL}/key").respond(200, json=key_body(management=management))
        code, out, err = inproc(*ADD, stdin=io.StringIO(KEY + "\n"))
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == line
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    code, out, _ = inproc("keys", "list", "--json")
    assert json.loads(out)[0]["kind"] == kind


def test_keys_add_with_no_limit(inproc: Callable[..., tuple[int, str, str]]) -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"{BASE_URL}/key").respond(
            200, json=key_body(management=True, limit=None, remaining=None)
        )
        code, out, _err = inproc(*ADD, stdin=io.StringIO(KEY))
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
    inproc: Callable[..., tuple[int, str, str]], db_path: Path, response: Any, message: str
) -> None:
    before = dump(db_path)
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(f"{BASE_URL}/key")
        if isinstance(response, Exception):
            route.side_effect = response
        else:
            route.return_value = response
        code, out, err = inproc(*ADD, stdin=io.StringIO(KEY))
    assert (code, out) == (1, "")
    assert err.startswith("error: " + message)
    assert err.rstrip().endswith(
        "nothing was stored (--no-verify stores a key without checking it)"
    )
    assert len(err.splitlines()) == 1 and KEY not in err
    assert route.call_count == 1
    assert dump(db_path) == before


def test_unknown_user_is_reported_before_any_request(
    inproc: Callable[..., tuple[int, str, str]],
) -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(f"{BASE_URL}/key").respond(200, json=key_body(management=True))
        code, _out, err = inproc(
            "keys", "add", "--user", "bob@example.com", "--name", "x", stdin=io.StringIO(KEY)
        )
    assert code == 2 and "no user bob@example.com" in err
    assert route.call_count == 0


class TtyIn(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_keys_add_on_a_terminal_uses_a_hidden_prompt(
    inproc: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str, stream: Any = None) -> str:
        prompts.append(prompt)
        return KEY

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    code, out, _err = inproc(*ADD, "--no-verify", stdin=TtyIn(""))
    assert code == 0 and prompts == ["OpenRouter key (hidden): "]
    assert KEY not in out


@pytest.mark.parametrize(("answer", "deleted"), [("y\n", True), ("\n", False), ("no\n", False)])
def test_keys_remove_asks_on_a_terminal(
    inproc: Callable[..., tuple[int, str, str]], answer: str, deleted: bool
) -> None:
    assert inproc(*ADD, "--no-verify", stdin=io.StringIO(KEY))[0] == 0
    code, out, err = inproc("keys", "remove", "1", stdin=TtyIn(answer))
    assert code == 0
    assert err == "delete key 1 'prod' of alice@example.com and all its usage rows? [y/N] "
    assert out == (
        "removed key 1 'prod' of alice@example.com and 0 usage rows\n"
        if deleted
        else "nothing deleted\n"
    )
    remaining = json.loads(inproc("keys", "list", "--json")[1])
    assert len(remaining) == (0 if deleted else 1)


def test_every_command_in_process(inproc: Callable[..., tuple[int, str, str]]) -> None:
    # The same commands as the subprocess flow, in-process so coverage sees the handlers.
    steps: list[tuple[tuple[str, ...], str, str]] = [
        (("generate-key",), "", ""),
        (("users", "add", "bob@example.com", "--password-stdin"), "pw\n", "with a password"),
        ((*ADD, "--no-verify"), KEY, "added key 1"),
        (("users", "list"), "", "bob@example.com"),
        (("users", "list", "--json"), "", '"has_password": true'),
        (("users", "disable", "bob@example.com"), "", "user bob@example.com disabled"),
        (("users", "disable", "bob@example.com"), "", "was already disabled"),
        (("users", "enable", "bob@example.com"), "", "user bob@example.com enabled"),
        (("keys", "list"), "", "alice@example.com"),
        (("keys", "disable", "1"), "", "key 1 disabled"),
        (("keys", "enable", "1"), "", "key 1 enabled"),
        (("tokens", "create", "--user", "alice@example.com", "--name", "ci"), "", "orw_"),
        (("tokens", "list"), "", "ci"),
        (("tokens", "list", "--json"), "", '"name": "ci"'),
        (("tokens", "revoke", "1"), "", "token 1 revoked"),
        (("tokens", "revoke", "1"), "", "token 1 was already revoked"),
        (
            (
                "keys",
                "rotate-master",
            ),
            "",
            "re-encrypted 0 keys",
        ),
        (("keys", "remove", "1", "--yes"), "", "removed key 1"),
    ]
    for argv, stdin, expected in steps:
        code, out, err = inproc(*argv, stdin=io.StringIO(stdin))
        assert code == 0, (argv, err)
        assert expected in out, (argv, out)
