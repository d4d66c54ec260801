"""The command line's parser: every command's arguments, help and examples; argparse's
errors as one line with exit code 2.

The command modules are imported lazily (:func:`worker.commands.register_all`) and import
neither SQLAlchemy nor the HTTP client at module level: building the parser, for ``--help`` or
shell completion, loads none of them (a test checks it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from worker.config import CONFIG_ENV, ENV_PREFIX
from worker.core.errors import UsageError

DESCRIPTION = (
    "Keeps a permanent, exact history of what every OpenRouter API key spends, per "
    "day and per model."
)
EPILOG = f"""\
configuration: --config PATH, else ${CONFIG_ENV}, else ./config.toml, else defaults.
Every key can be overridden by {ENV_PREFIX}<SECTION>_<KEY>, e.g.
{ENV_PREFIX}DATABASE_URL for [database] url (see config.example.toml).
exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
example: openrouter-watcher report --by day --last 7"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, like every other error."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def format_help(self) -> str:
        # The epilog's examples are commands to copy: shown as written, never re-wrapped like
        # the description (textwrap would even break a path at a hyphen).
        epilog, self.epilog = self.epilog, None
        try:
            text = super().format_help()
        finally:
            self.epilog = epilog
        return f"{text}\n{epilog}\n" if epilog else text


class _Version(argparse.Action):
    """--version, reading the version only when asked (see :mod:`worker`)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        import worker

        print(f"{parser.prog} {worker.__version__}", file=sys.stdout)  # as argparse's own
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from worker.commands import register_all
    from worker.commands.daemon import register_migrate

    parser = _Parser(
        prog="openrouter-watcher",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the version number and exit"
    )
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="override [logging] level",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    register_migrate(sub)  # first in --help: the first command of a new install
    register_all(sub)
    return parser


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser of the command line, ``parser`` first, then each command's, nested ones
    (``keys add``) included: for completion and for the tests of every ``--help``."""
    yield parser
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if id(sub) not in seen:  # an alias is the same parser under another name
                    seen.add(id(sub))
                    yield from walk(sub)
