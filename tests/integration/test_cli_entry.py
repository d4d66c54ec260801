"""The entry points: `python -m worker` and the console script agree; usage errors are exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

from worker import __version__

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
