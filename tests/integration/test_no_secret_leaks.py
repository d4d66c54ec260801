"""No secret leaks: the OpenRouter key, the master keys and a password never appear in any
output, log line (DEBUG, SQL echo on), JSON, or the SQLite file's bytes (.db, -wal, -shm).

The subprocess flow runs every account command through the installed console script; the
verified ``keys add`` path (a real ``GET /key``, mocked with respx) runs in-process because
respx cannot reach into a subprocess.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import respx

from worker import cli
from worker.crypto import generate_master_key
from worker.testing.env import clean_env

SCRIPT = Path(sys.executable).parent / "openrouter-watcher"
KEY = "sk-or-v1-" + "5e" * 32
KEY2 = "sk-or-v1-" + "7a" * 32
PASSWORD = "correct horse battery staple"
BASE_URL = "https://openrouter.test/api/v1"


def _env(sqlite_url: str, key: str, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update(
        {
            "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
            "OPENROUTER_WATCHER_ENCRYPTION_KEY": key,
            "OPENROUTER_WATCHER_LOGGING_FORMAT": "json",
            # Every SQL statement and its parameters in the log, too.
            "OPENROUTER_WATCHER_DATABASE_ECHO": "true",
        },
        **extra,
    )
    return env


def _db_bytes(sqlite_url: str) -> bytes:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def _assert_clean(text: str, secrets: dict[str, str]) -> None:
    for label, secret in secrets.items():
        assert secret not in text, f"{label} leaked"


def test_no_secret_in_any_output_log_json_or_database_file(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    master, new_master = generate_master_key(), generate_master_key()
    secrets = {
        "openrouter key": KEY,
        "second openrouter key": KEY2,
        "master key": master,
        "new master key": new_master,
        "password": PASSWORD,
    }
    transcript: list[str] = []

    def run(*args: str, input: str = "", key: str = master, code: int = 0, **extra: str) -> str:
        result = subprocess.run(
            [str(SCRIPT), "--log-level", "DEBUG", *args],
            input=input,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            env=_env(sqlite_url, key, **extra),
            check=False,
        )
        transcript.extend([result.stdout, result.stderr])
        assert result.returncode == code, (args, result.stderr[-2000:])
        return result.stdout + result.stderr

    run("generate-key")
    run("users", "add", "alice@example.com")
    run("users", "add", "bob@example.com", "--password-stdin", input=PASSWORD + "\n")
    run(
        "keys",
        "add",
        "--user",
        "alice@example.com",
        "--name",
        "prod",
        "--no-verify",
        input=KEY + "\n",
    )
    # Errors that see the key: on argv (argparse echoes it), duplicate name, bad format.
    run("keys", "add", "--user", "alice@example.com", "--name", "x", KEY, code=2)
    run(
        "keys",
        "add",
        "--user",
        "alice@example.com",
        "--name",
        "prod",
        "--no-verify",
        input=KEY,
        code=2,
    )
    run(
        "keys",
        "add",
        "--user",
        "alice@example.com",
        "--name",
        "y",
        "--no-verify",
        input=KEY + " extra",
        code=2,
    )
    for listing in (["users", "list"], ["keys", "list"], ["tokens", "list"]):
        run(*listing)
        run(*listing, "--json")
    run("keys", "list", "--user", "alice@example.com", "--json")
    run("users", "disable", "bob@example.com")
    run("users", "enable", "bob@example.com")
    run("keys", "disable", "1")
    run("keys", "enable", "1")
    run("tokens", "create", "--user", "alice@example.com", "--name", "ci")
    run("tokens", "list", "--user", "alice@example.com", "--json")
    run("tokens", "revoke", "1")
    run("keys", "rotate-master", key=new_master, code=1)  # old key not configured: names ids
    log = run(
        "keys", "rotate-master", key=new_master, OPENROUTER_WATCHER_ENCRYPTION_PREVIOUS_KEYS=master
    )
    assert "master_key_rotated" in log
    run("keys", "list", "--json", key=new_master)
    run("keys", "remove", "1", "--yes", key=new_master)

    # The verified path, in-process with respx, at DEBUG with SQL echo.
    env = _env(
        sqlite_url,
        new_master,
        OPENROUTER_WATCHER_OPENROUTER_BASE_URL=BASE_URL,
        OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS="1",
    )
    for var in [v for v in os.environ if v.startswith("OPENROUTER_WATCHER_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.chdir(tmp_path)
    for status in (200, 401):
        out, err = io.StringIO(), io.StringIO()
        with respx.mock(assert_all_called=True) as mock:
            mock.get(f"{BASE_URL}/key").respond(
                status,
                json={
                    "data": {
                        "label": KEY2[:12] + "..." + KEY2[-3:],
                        "is_management_key": True,
                        "limit": None,
                        "limit_remaining": None,
                        "usage": 1.25,
                    }
                }
                if status == 200
                else {"error": {"code": 401, "message": "bad key"}},
            )
            code = cli.main(
                [
                    "--log-level",
                    "DEBUG",
                    "keys",
                    "add",
                    "--user",
                    "alice@example.com",
                    "--name",
                    f"verified-{status}",
                ],
                stdin=io.StringIO(KEY2),
                stdout=out,
                stderr=err,
            )
        assert code == (0 if status == 200 else 1), err.getvalue()[-2000:]
        transcript.extend([out.getvalue(), err.getvalue()])
    echoed = capsys.readouterr()  # SQLAlchemy's echo handler writes to the real stdout
    transcript.extend([echoed.out, echoed.err])
    assert "INSERT INTO api_keys" in echoed.out

    text = "\n".join(transcript)
    assert '"event": "key_added"' in text and "BEGIN" in text  # logs and SQL really captured
    _assert_clean(text, secrets)
    raw = _db_bytes(sqlite_url)
    assert b"alice@example.com" in raw  # the file really holds the data
    for label, secret in secrets.items():
        assert secret.encode() not in raw, f"{label} is in the database file"
