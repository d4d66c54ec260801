"""structlog setup and the secret-masking processor.

Every log line, ours and the standard library's (apscheduler, httpx, alembic), goes through one
processor chain whose last step before rendering is :func:`mask_secrets`: anything that looks
like an OpenRouter key (``sk-or-…``) and every secret registered with :func:`register_secret`
(the master keys) is replaced by ``[REDACTED]`` in messages, fields and exception text.

structlog is imported when a line is first logged (or logging is configured eagerly), not
with this module: the masking functions are needed by commands (``--help``, ``report``) that
never log, and every command line start pays for what its imports load.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

REDACTED = "[REDACTED]"
# OpenRouter keys look like sk-or-v1-<64 hex>; mask any sk-or- token whatever follows.
OPENROUTER_KEY_RE = re.compile(r"sk-or-[A-Za-z0-9_\-]*")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_re: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Mask this exact string (e.g. a master key) in every later log line and error."""
    global _secret_re
    if not value or len(value) < 8:
        return
    with _secrets_lock:
        _secrets.add(value)
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secret_re = re.compile("|".join(re.escape(s) for s in alternatives))


# A long run of key characters: an OpenRouter key echoed without its sk-or- prefix, a token.
KEY_LIKE_RE = re.compile(r"[A-Za-z0-9_\-]{40,}")


def mask_key_like(text: str) -> str:
    """The text with every key-like token of 40 or more characters replaced by [REDACTED].

    For text that comes from outside (an upstream error message may echo the key it was sent,
    without its prefix); not for our own log lines, whose ids and hashes would be masked too.
    """
    return KEY_LIKE_RE.sub(REDACTED, text)


def mask_text(text: str) -> str:
    """The text with OpenRouter keys and registered secrets replaced by [REDACTED]."""
    text = OPENROUTER_KEY_RE.sub(REDACTED, text)
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return text


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bytes):
        return mask_text(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return mask_text(str(value))


def mask_secrets(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: mask secrets in every field (run after exceptions are formatted)."""
    return {key: _mask(value) for key, value in event_dict.items()}


def _shared_processors() -> list[Any]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def configure_logging(
    level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None, *, lazy: bool = False
) -> None:
    """Route structlog and the standard library's logging to one stream, masked.

    ``fmt`` is ``json`` (one JSON object per line), ``console`` (readable, for a terminal) or
    ``auto`` (console on a terminal, JSON otherwise, e.g. under systemd).

    ``lazy``: the handler and the levels are set now, structlog is configured (and imported)
    when the first line is logged. The command line configures its commands this way: most
    read-only ones log nothing, and structlog is a noticeable part of their start.
    """
    global _structlog_pending
    handler = _Handler(stream or sys.stderr, fmt)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Kept for DEBUG: httpx logs one INFO line per request, and APScheduler one per job run
    # ("Running job …", "Job … executed successfully") besides "Added job …" and "Scheduler
    # started". Our own events say the same with stable names (daemon_started, sync_heartbeat
    # with next_run_at, sync_job_failed, sync_missed), so in JSON mode too the free-text lines
    # would only double the journal; APScheduler's warnings and errors still pass.
    for noisy in ("httpx", "httpcore", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(
            max(logging.WARNING, root.level) if level.upper() != "DEBUG" else logging.DEBUG
        )
    if lazy:
        _structlog_pending = True
    else:
        handler.build_formatter()
        _configure_structlog()


def drop_lazy_logging() -> None:
    """Forget a lazy configuration that nothing used: a caller that runs commands in its own
    process (a test, the demo) keeps its own structlog configuration afterwards."""
    global _structlog_pending
    _structlog_pending = False


# Set by configure_logging(lazy=True) until a structlog logger is first used.
_structlog_pending = False
_configure_lock = threading.Lock()


def _configure_structlog() -> None:
    global _structlog_pending
    import structlog

    with _configure_lock:
        _structlog_pending = False
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                *_shared_processors(),
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )


class _Handler(logging.StreamHandler):
    """The root logger's one handler: structlog's formatter (masking, then the renderer),
    built for the first line it writes unless asked for before."""

    def __init__(self, stream: TextIO, fmt: str) -> None:
        super().__init__(stream)
        self.fmt = fmt

    def build_formatter(self) -> None:
        import structlog

        fmt = self.fmt
        if fmt == "auto":
            fmt = "console" if self.stream.isatty() else "json"
        renderer: Any
        if fmt == "json":
            renderer = structlog.processors.JSONRenderer(sort_keys=False)
        else:
            renderer = structlog.dev.ConsoleRenderer(colors=self.stream.isatty())
        self.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=_shared_processors(),
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    mask_secrets,
                    renderer,
                ],
            )
        )

    def format(self, record: logging.LogRecord) -> str:
        if self.formatter is None:  # called with the handler's lock held
            self.build_formatter()
        return super().format(record)


class _Logger:
    """structlog's logger, looked up when first used: a module can hold one from import time
    (``log = get_logger(__name__)``) without importing structlog."""

    __slots__ = ("_initial", "_name")

    def __init__(self, name: str | None, initial: dict[str, Any]) -> None:
        self._name = name
        self._initial = initial

    def __getattr__(self, attr: str) -> Any:
        import structlog

        if _structlog_pending:
            _configure_structlog()
        return getattr(structlog.get_logger(self._name, **self._initial), attr)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return _Logger(name, initial)


def bound_contextvars(**values: Any) -> AbstractContextManager[None]:
    """Context manager binding run_id / api_key_id / user_id to every log line inside it."""
    import structlog

    return structlog.contextvars.bound_contextvars(**values)
