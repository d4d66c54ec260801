"""The entry points as real processes: the installed console script and `python -m worker`
agree, usage errors are exit 2 with one line, and a closed stdin is a usage error, not a crash.

These are the CLI's process-level smoke tests; every command's behaviour is tested in-process
through ``worker.cli.main`` (the ``cli`` fixture).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from worker import __version__
from worker.testing.env import clean_env

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py
ENTRY_POINTS = {
    "console script": [str(Path(sys.executable).parent / "openrouter-watcher")],
    "python -m worker": [sys.executable, "-m", "worker"],
}
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


def _run(entry: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*entry, *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(params=list(ENTRY_POINTS))
def entry(request: pytest.FixtureRequest) -> list[str]:
    return ENTRY_POINTS[request.param]


def test_help_lists_every_command_and_the_env_rule() -> None:
    result = _run(ENTRY_POINTS["python -m worker"], "--help")
    assert (result.returncode, result.stderr) == (0, "")
    for command in COMMANDS:
        assert command in result.stdout
    assert "OPENROUTER_WATCHER_<SECTION>_<KEY>" in result.stdout


def test_version(entry: list[str]) -> None:
    result = _run(entry, "--version")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"openrouter-watcher {__version__}\n"


def test_unknown_command_is_one_line_and_exit_2(entry: list[str]) -> None:
    result = _run(entry, "frobnicate")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_add_with_a_closed_stdin_is_a_usage_error(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, master_key: str
) -> None:
    """Under CI or cron there may be no standard input at all: not a crash, exit 2."""
    config = {
        "OPENROUTER_WATCHER_CONFIG": os.devnull,
        "OPENROUTER_WATCHER_DATABASE_URL": sqlite_url,
        "OPENROUTER_WATCHER_ENCRYPTION_KEY": master_key,
        "OPENROUTER_WATCHER_LOGGING_LEVEL": "WARNING",
    }
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    assert cli("users", "add", "a@example.com")[0] == 0
    result = subprocess.run(
        [
            *ENTRY_POINTS["console script"],
            *("keys", "add", "--user", "a@example.com", "--name", "k", "--no-verify"),
        ],
        env=clean_env(**config),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(0),  # no standard input at all, not even /dev/null
    )
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == (
        "error: no OpenRouter key given: pipe it on stdin or type it at the prompt\n"
    )
    assert cli("keys", "list", "--json") == (0, "[]\n", "")
