"""Help for people: every --help shows its command at work, and shell completion is generated
from the same parser.

Both walk whatever parsers exist, so a new command is checked as soon as it is registered.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from collections.abc import Callable

import pytest

from worker.commands.completion import SHELLS
from worker.commands.parser import build_parser, walk

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py
PARSERS = {parser.prog: parser for parser in walk(build_parser())}


def examples(parser: argparse.ArgumentParser) -> list[str]:
    return [
        line.removeprefix("example: ")
        for line in parser.format_help().splitlines()
        if line.startswith("example:")
    ]


def test_the_walk_reaches_nested_commands() -> None:
    assert {"openrouter-watcher", "openrouter-watcher keys", "openrouter-watcher keys add"} <= set(
        PARSERS
    )
    assert len(PARSERS) > 25


@pytest.mark.parametrize("prog", list(PARSERS))
def test_every_help_shows_an_example_of_its_own_command(prog: str) -> None:
    shown = examples(PARSERS[prog])
    assert shown, f"{prog} --help has no 'example:' line"
    for command in shown:
        assert command == prog or command.startswith(prog + " "), command
        # It is a command that parses: the words before any redirection or pipe.
        words = shlex.split(command)
        cut = next((i for i, w in enumerate(words) if w in (">", "<", "|")), len(words))
        assert words[0] == "openrouter-watcher"
        build_parser().parse_args(words[1:cut])


def test_help_on_the_command_line_shows_the_example(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("keys", "add", "--help")[0] == 0
    out = capsys.readouterr().out  # argparse prints help on the real stdout
    assert out.rstrip().endswith(
        "example: openrouter-watcher keys add --user alice@example.com --name production"
    )


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
