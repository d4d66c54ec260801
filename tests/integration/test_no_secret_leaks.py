"""No secret leaks: the OpenRouter keys, the master keys and a password never appear in any
output, log line (DEBUG, SQL echo on), JSON, or the SQLite file's bytes (.db, -wal, -shm).

Every account command runs in-process through ``worker.cli.main`` (the ``cli`` fixture), the
verified ``keys add`` path against a respx-mocked ``GET /key``. One ``keys add`` runs as the
installed console script in a real process, the key written to its stdin pipe: while that
process waits for the end of its input, its ``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ``
are read, and must not hold the key.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import respx

from worker.testing.env import clean_env
from worker.vault.crypto import generate_master_key

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py
SCRIPT = Path(sys.executable).parent / "openrouter-watcher"
KEY = "sk-or-v1-" + "5e" * 32
KEY2 = "sk-or-v1-" + "7a" * 32
KEY3 = "sk-or-v1-" + "3b" * 32  # the one OpenRouter refuses (KEY2 is registered by then)
PIPED_KEY = "sk-or-v1-" + "9d" * 32
PASSWORD = "correct horse battery staple"
BASE_URL = "https://openrouter.test/api/v1"
ADD = ("keys", "add", "--user", "alice@example.com")


def _db_bytes(sqlite_url: str) -> bytes:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def _assert_clean(text: str, secrets: dict[str, str]) -> None:
    for label, secret in secrets.items():
        assert secret not in text, f"{label} leaked"


def _keys_add_through_a_pipe(env: dict[str, str], cwd: Path) -> tuple[bytes, bytes, str, str]:
    """``echo $KEY | openrouter-watcher keys add …`` as a real process.

    Returns its ``/proc`` cmdline and environ, read while it waits for the end of its input
    (the key already in the pipe), then its stdout and stderr.
    """
    process = subprocess.Popen(
        [str(SCRIPT), "--log-level", "DEBUG", *ADD, "--name", "piped", "--no-verify"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )
    try:
        assert process.stdin is not None
        process.stdin.write(PIPED_KEY + "\n")
        process.stdin.flush()
        # `keys add` reads stdin to its end: until it is closed, the process stays alive.
        proc = Path(f"/proc/{process.pid}")
        deadline = time.monotonic() + 30
        while not (cmdline := (proc / "cmdline").read_bytes()):  # empty until exec is done
            assert process.poll() is None, "the process ended before stdin was closed"
            assert time.monotonic() < deadline, "no command line in /proc"
            time.sleep(0.01)
        environ = (proc / "environ").read_bytes()
        assert process.poll() is None  # so both were read from the live process
        out, err = process.communicate(timeout=60)  # closes stdin first
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err[-2000:]
    return cmdline, environ, out, err


def test_no_secret_in_argv_environ_output_log_json_or_database_file(
    cli: Cli,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    master, new_master = generate_master_key(), generate_master_key()
    secrets = {
        "openrouter key": KEY,
        "second openrouter key": KEY2,
        "refused openrouter key": KEY3,
        "piped openrouter key": PIPED_KEY,
        "master key": master,
        "new master key": new_master,
        "password": PASSWORD,
    }
    env = {
        "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
        "OPENROUTER_WATCHER_ENCRYPTION_KEY": master,
        "OPENROUTER_WATCHER_LOGGING_FORMAT": "json",
        # Every SQL statement and its parameters in the log, too.
        "OPENROUTER_WATCHER_DATABASE_ECHO": "true",
        "OPENROUTER_WATCHER_OPENROUTER_BASE_URL": BASE_URL,
        "OPENROUTER_WATCHER_OPENROUTER_MAX_ATTEMPTS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    transcript: list[str] = []

    def run(*args: str, stdin: str = "", code: int = 0, **env: str) -> str:
        got, out, err = cli("--log-level", "DEBUG", *args, stdin=stdin, env=env)
        transcript.extend([out, err])
        assert got == code, (args, err[-2000:])
        return out + err

    run("generate-key")
    run("users", "add", "alice@example.com")
    run("users", "add", "bob@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    run(*ADD, "--name", "prod", "--no-verify", stdin=KEY + "\n")

    # One key through a real pipe into a real process: not in its argv or environment.
    cmdline, environ, out, err = _keys_add_through_a_pipe(clean_env(**env), tmp_path)
    argv = ["--log-level", "DEBUG", *ADD, "--name", "piped", "--no-verify"]
    assert cmdline.split(b"\0")[-len(argv) - 1 :] == [*(a.encode() for a in argv), b""]
    assert b"OPENROUTER_WATCHER_DATABASE_URL=" in environ  # the child's real environment
    _assert_clean(cmdline.decode(), secrets)
    # The master key is configuration, given in the environment on purpose; nothing else is.
    _assert_clean(environ.decode(), {k: v for k, v in secrets.items() if "master" not in k})
    transcript.extend([out, err])
    assert out.startswith("added key 2 'piped' for alice@example.com")
    assert "INSERT INTO api_keys" in err and '"event": "key_added"' in err  # SQL echo, logs

    # Errors that see the key: on argv (argparse echoes it), duplicate name, bad format.
    run(*ADD, "--name", "x", KEY, code=2)
    run(*ADD, "--name", "prod", "--no-verify", stdin=KEY, code=2)
    run(*ADD, "--name", "y", "--no-verify", stdin=KEY + " extra", code=2)
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
    rotated = {"OPENROUTER_WATCHER_ENCRYPTION_KEY": new_master}
    run("keys", "rotate-master", code=1, **rotated)  # old key not configured: names ids
    log = run(
        "keys", "rotate-master", OPENROUTER_WATCHER_ENCRYPTION_PREVIOUS_KEYS=master, **rotated
    )
    assert "master_key_rotated" in log
    run("keys", "list", "--json", **rotated)
    run("keys", "remove", "1", "--yes", **rotated)

    # The verified path: a real GET /key (mocked), OK and refused.
    for status in (200, 401):
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
            run(
                *ADD,
                f"--name=verified-{status}",
                stdin=KEY2 if status == 200 else KEY3,
                code=0 if status == 200 else 1,
                **rotated,
            )
    stray = capsys.readouterr()  # anything written past the streams main() was given
    transcript.extend([stray.out, stray.err])

    text = "\n".join(transcript)
    assert '"event": "key_added"' in text and "INSERT INTO api_keys" in text  # logs and SQL
    _assert_clean(text, secrets)
    raw = _db_bytes(sqlite_url)
    assert b"alice@example.com" in raw  # the file really holds the data
    for label, secret in secrets.items():
        assert secret.encode() not in raw, f"{label} is in the database file"
