"""The command line: parse arguments, set up logging, call library code; nothing else.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Expected errors
(:class:`worker.errors.WatcherError`) are printed as one line on stderr, never a traceback.

An operator types ``status`` or ``report`` many times a day, so a command imports what it
needs when it runs: this module and the command modules load neither SQLAlchemy nor the
HTTP client, the scheduler or Alembic (a test checks each read-only command's imports).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from worker import render
from worker.config import CONFIG_ENV, ENV_PREFIX, Settings, load_settings
from worker.errors import EXIT_RUNTIME, EXIT_USAGE, UsageError, WatcherError
from worker.logs import configure_logging, drop_lazy_logging, get_logger, mask_text

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

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


@dataclass
class Context:
    """What a command needs, created lazily so `--help` and `generate-key` need no database."""

    config_path: str | None
    log_level: str | None = None
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _settings: Settings | None = None
    _engine: Engine | None = None
    _factory: sessionmaker[Session] | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def override_settings(self, settings: Settings) -> None:
        """Replace the loaded settings (before the engine is created)."""
        self._settings = settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from worker.db import engine_from_settings

            self._engine = engine_from_settings(self.settings)
        return self._engine

    def sessions(self, *, check: bool = True) -> sessionmaker[Session]:
        """The session factory; by default only once the schema is known to be at head."""
        if self._factory is None:
            from worker.db import check_schema, make_session_factory

            if check:
                check_schema(self.engine)
            self._factory = make_session_factory(self.engine)
        return self._factory

    def setup_logging(
        self, stream: TextIO | None = None, fmt: str | None = None, *, lazy: bool = False
    ) -> None:
        """Configure logging (``lazy``: structlog is loaded by the first line logged)."""
        settings = self.settings
        configure_logging(
            self.log_level or settings.logging.level,
            fmt or settings.logging.format,
            stream or self.stderr,
            lazy=lazy,
        )

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def print_table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[Any]],
        **options: Any,
    ) -> None:
        """A table on stdout (:func:`worker.render.table`)."""
        for line in render.table(headers, rows, **options):
            self.out(line)

    def print_json(self, value: Any) -> None:
        """``value`` as the stable JSON document on stdout (:func:`worker.render.to_json`)."""
        self.out(render.to_json(value))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _cmd_migrate(ctx: Context, args: argparse.Namespace) -> int:
    from worker.db import check_schema, init_db

    engine = ctx.engine
    init_db(engine)
    check_schema(engine)
    url = engine.url.render_as_string(hide_password=True)
    ctx.out(f"database {url} is at the latest schema revision")
    return 0


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
    migrate = sub.add_parser(
        "migrate",
        help="bring the database schema to the latest revision",
        epilog="example: openrouter-watcher migrate",
    )
    migrate.set_defaults(func=_cmd_migrate, logging=True)
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


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of the ``openrouter-watcher`` console script."""
    stderr = stderr or sys.stderr
    ctx: Context | None = None
    try:
        args = build_parser().parse_args(argv)
        ctx = Context(
            config_path=args.config,
            log_level=args.log_level,
            stdin=stdin or sys.stdin or io.StringIO(),
            stdout=stdout or sys.stdout,
            stderr=stderr,
        )
        if getattr(args, "logging", True):
            ctx.setup_logging(lazy=True)  # most read-only commands log nothing
        return int(args.func(ctx, args) or 0)
    except WatcherError as exc:
        print(f"error: {mask_text(str(exc))}", file=stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=stderr)
        return 130
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    except Exception as exc:
        # Unexpected: one masked line for the user, the full (masked) traceback in the log.
        get_logger("worker.cli").exception("unexpected_error")
        print(f"error: unexpected {type(exc).__name__}: {mask_text(str(exc))}", file=stderr)
        return EXIT_RUNTIME
    finally:
        drop_lazy_logging()
        if ctx is not None:
            ctx.close()
