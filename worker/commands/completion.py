"""``completion bash|zsh|fish``: a shell completion script, generated from the parser itself.

shtab turns the argparse tree into the shell's own completion code, so every command, option
and choice (``report --by``, ``--format``) completes as soon as it exists, with nothing written
by hand to fall out of date. Options that take a path (metavar ``PATH`` or ``FILE``) complete
file names.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from worker.commands.args import example

if TYPE_CHECKING:
    from worker.commands.context import Context

SHELLS = ("bash", "zsh", "fish")
PATH_METAVARS = ("PATH", "FILE")
DESCRIPTION = """\
Print the completion script of openrouter-watcher for a shell, generated from its commands
and options. Where to put it:
  bash: ~/.local/share/bash-completion/completions/openrouter-watcher
        (or eval "$(openrouter-watcher completion bash)" in ~/.bashrc)
  zsh:  _openrouter-watcher in a directory of $fpath
  fish: ~/.config/fish/completions/openrouter-watcher.fish"""


def cmd_completion(ctx: Context, args: argparse.Namespace) -> int:
    import shtab

    from worker.commands.parser import build_parser, walk

    parser = build_parser()
    for sub in walk(parser):
        for action in sub._actions:
            if action.metavar in PATH_METAVARS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
    ctx.out(shtab.complete(parser, shell=args.shell).rstrip("\n"))
    return 0


def register(subparsers: Any) -> None:
    """Add ``completion`` to the command line."""
    parser = subparsers.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description=DESCRIPTION,
        epilog=example(
            "completion bash > ~/.local/share/bash-completion/completions/openrouter-watcher"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    parser.set_defaults(func=cmd_completion, logging=False)
