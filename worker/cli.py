"""The command line: parse arguments, set up logging, call the command; nothing else.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Expected errors
(:class:`worker.core.errors.WatcherError`) are printed as one line on stderr, never a traceback.

An operator types ``status`` or ``report`` many times a day, so a command imports what it
needs when it runs: this module and the command modules load neither SQLAlchemy nor the
HTTP client, the scheduler or Alembic (a test checks each read-only command's imports).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import TextIO

from worker.commands.context import Context
from worker.commands.parser import build_parser
from worker.core.errors import EXIT_RUNTIME, EXIT_USAGE, WatcherError
from worker.core.logs import drop_lazy_logging, get_logger, mask_text


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
