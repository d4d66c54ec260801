"""Help for people: shell completion generated from the parser, whatever commands exist."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from worker.commands.completion import SHELLS

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_script_for_each_shell_knows_the_commands(cli: Cli, shell: str) -> None:
    code, out, err = cli("completion", shell)
    assert (code, err) == (0, "")
    for word in ("sync", "backfill", "report", "status", "keys", "rotate-master", "--by"):
        assert word in out, word
    assert "account" in out and "model" in out  # report --by's choices
    if shell == "bash":
        checked = subprocess.run(
            ["bash", "-n"], input=out, capture_output=True, text=True, timeout=30, check=False
        )
        assert (checked.returncode, checked.stderr) == (0, "")
        assert out.rstrip().endswith("openrouter-watcher")  # `complete … openrouter-watcher`


def test_an_unknown_shell_is_a_usage_error(cli: Cli) -> None:
    code, out, err = cli("completion", "tcsh")
    assert (code, out) == (2, "")
    assert err.startswith("error: argument shell: invalid choice: 'tcsh'")
