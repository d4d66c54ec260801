"""The entry points: `python -m worker` and the console script agree; usage errors are exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

from worker import __version__
from worker.testing.env import clean_env

COMMANDS = (
    "migrate",
    "generate-key",
    "users",
    "keys",
    "tokens",
    "sync",
    "backfill",
    "run",
    "status",
    "report",
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENROUTER_WATCHER_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_python_dash_m_worker_lists_every_command_and_the_env_rule() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout
    assert "OPENROUTER_WATCHER_<SECTION>_<KEY>" in result.stdout


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"openrouter-watcher {__version__}"


def test_unknown_command_is_one_line_and_exit_2() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_keys_add_with_a_closed_stdin_is_a_usage_error(sqlite_url: str, master_key: str) -> None:
    """Under CI or cron there may be no standard input at all: not a crash, exit 2."""
    env = clean_env(
        OPENROUTER_WATCHER_CONFIG=os.devnull,
        OPENROUTER_WATCHER_DATABASE_URL=sqlite_url,
        OPENROUTER_WATCHER_ENCRYPTION_KEY=master_key,
    )
    cli = [sys.executable, "-m", "worker"]
    subprocess.run(
        [*cli, "users", "add", "a@example.com"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    result = subprocess.run(
        [*cli, "keys", "add", "--user", "a@example.com", "--name", "k", "--no-verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(0),  # no standard input at all, not even /dev/null
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
