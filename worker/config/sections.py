"""The configuration's sections, ``[database]`` to ``[digest]``: every option with its
default, its documentation and its validation rule.

The loader (:mod:`worker.config.load`) fills them from the file and the environment; each
field's metadata (``doc``, ``lo``, ``hi``, ``choices``, ``check``) is what it validates against
and what ``--help`` and ``config.example.toml`` document.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "OPENROUTER_WATCHER_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
DEFAULT_CONFIG_FILE = Path("config.toml")
DEFAULT_DATABASE_URL = "sqlite:///./data/openrouter-watcher.db"


def _opt(
    default: Any,
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A settings field with its documentation and validation rules."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_database_url(value: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        return "is not a database URL (e.g. sqlite:///./data/openrouter-watcher.db)"
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        return "must be a sqlite:/// or postgresql+psycopg:// URL"
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        return "PostgreSQL URLs must use the psycopg 3 driver: postgresql+psycopg://…"
    return None


def _check_http_url(value: str) -> str | None:
    if not value.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    return None


def _check_cron(value: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        return f"is not a valid crontab expression ({exc})"
    return None


def parse_listen(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port); None for "" (off).

    Raises ValueError naming what is wrong.
    """
    if not value:
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8787 (empty: no HTTP server)")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("an IPv6 address goes in brackets: [::1]:8787")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets: [::1]:8787")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError("port must be between 0 (any free port) and 65535")
    return host, port


def _check_listen(value: str) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    url: str = _opt(
        DEFAULT_DATABASE_URL,
        "SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB",
        check=_check_database_url,
    )
    busy_timeout_ms: int = _opt(
        5000, "SQLite: how long a writer waits for a lock (ms)", lo=0, hi=600_000
    )
    echo: bool = _opt(False, "Log every SQL statement (debugging only)")


@dataclass(frozen=True, kw_only=True)
class OpenRouterSettings:
    base_url: str = _opt(
        "https://openrouter.ai/api/v1", "OpenRouter API base URL", check=_check_http_url
    )
    connect_timeout: float = _opt(10.0, "Seconds to wait for a TCP/TLS connection", lo=0.1, hi=600)
    read_timeout: float = _opt(60.0, "Seconds to wait for a response", lo=0.1, hi=3600)
    max_attempts: int = _opt(5, "Attempts per request, the first included", lo=1, hi=50)
    request_deadline: float = _opt(
        120.0,
        "Total seconds one request may take, retries and the answer's bytes included",
        lo=1,
        hi=3600,
    )
    backoff_initial: float = _opt(
        0.5, "First retry wait (s); doubles each attempt, with jitter", lo=0, hi=600
    )
    backoff_max: float = _opt(60.0, "Longest wait between attempts (s)", lo=0, hi=3600)
    retry_after_max: float = _opt(60.0, "Cap on a server's Retry-After (s)", lo=0, hi=3600)
    max_response_bytes: int = _opt(
        64 * 1024 * 1024,
        "Largest answer accepted (bytes); a larger one fails the key as invalid_response",
        lo=1024,
        hi=2**31,
    )
    http_referer: str = _opt("", "Optional HTTP-Referer header (OpenRouter app attribution)")
    x_title: str = _opt("", "Optional X-Title header (OpenRouter app attribution)")


@dataclass(frozen=True, kw_only=True)
class EncryptionSettings:
    key: str = _opt(
        "",
        "Base64 256-bit master key. Prefer the environment variable or a "
        "key file over writing it here",
    )
    key_file: str = _opt("", "Path of a file holding the base64 master key (mode 0600)")
    previous_keys: tuple[str, ...] = _opt(
        [], "Old base64 master keys still accepted for decryption while rotating"
    )


@dataclass(frozen=True, kw_only=True)
class SyncSettings:
    concurrency: int = _opt(8, "Keys fetched from OpenRouter at the same time", lo=1, hi=256)
    max_delete_fraction: float = _opt(
        0.5,
        "Hold back an answer that would delete more than this share of a key's stored rows "
        "in the window (an empty answer included)",
        lo=0,
        hi=1,
    )
    confirm_delete_after_hours: float = _opt(
        20.0,
        "A held-back answer seen again this many hours later is applied",
        lo=0,
        hi=8760,
    )
    key_refresh_days: int = _opt(
        7,
        "Fetch each key of an account at least this often, even when its usage did not move "
        "(OpenRouter may restate a day)",
        lo=1,
        hi=30,
    )
    history_days: int = _opt(
        365,
        "On an account's first syncs, import this many days of history before /activity's "
        "window from /analytics/query (0: off)",
        lo=0,
        hi=365,
    )


@dataclass(frozen=True, kw_only=True)
class ScheduleSettings:
    cron: str = _opt(
        "20 0 * * *",
        "When the daemon syncs (crontab, UTC). OpenRouter reports "
        "completed UTC days, so just after midnight UTC",
        check=_check_cron,
    )
    interval_minutes: int = _opt(0, "Also sync every N minutes (0: off)", lo=0, hi=525_600)
    interval_seconds: int = _opt(
        0, "Also sync every N seconds (0: off; for tests and demos)", lo=0, hi=31_536_000
    )
    run_at_startup: bool = _opt(True, "Sync once when the daemon starts")
    misfire_grace_seconds: int = _opt(
        3600, "A run missed by up to this long still runs", lo=1, hi=604_800
    )
    shutdown_grace_seconds: float = _opt(
        30.0, "On SIGTERM, how long the key in flight may take to finish", lo=0, hi=3600
    )


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    listen: str = _opt(
        "127.0.0.1:8787",
        "Where `run` serves /metrics, /healthz, the API and the dashboard: HOST:PORT "
        "([::1]:PORT for IPv6; port 0 picks a free one, logged as http_started); "
        "empty turns the HTTP server off",
        check=_check_listen,
    )
    healthy_within_hours: float = _opt(
        26.0,
        "/healthz answers 503 when an active key has not synced successfully for this long",
        lo=1,
        hi=8760,
    )
    failed_auth_per_minute: int = _opt(
        10,
        "Failed API token attempts allowed per client address and minute; more answer 429",
        lo=1,
        hi=10_000,
    )
    trusted_proxies: tuple[str, ...] = _opt(
        [],
        "Addresses of reverse proxies whose X-Forwarded-For names the client "
        "(for the failed-token limit); empty: the peer address is the client",
    )


@dataclass(frozen=True, kw_only=True)
class LoggingSettings:
    level: str = _opt("INFO", "Log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    format: str = _opt(
        "auto",
        "json, console, or auto (console on a terminal, JSON otherwise)",
        choices=("auto", "json", "console"),
    )


def _check_hhmm(value: str) -> str | None:
    hour, _, minute = value.partition(":")
    if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
        return "must be a UTC time of day as HH:MM, e.g. 08:00"
    return None


@dataclass(frozen=True, kw_only=True)
class LiveSettings:
    interval_minutes: int = _opt(
        10,
        "The daemon polls OpenRouter's live figures (/credits, /keys, /key) every N minutes "
        "and evaluates the [[alerts]] rules (0: off)",
        lo=0,
        hi=1440,
    )
    interval_seconds: int = _opt(
        0,
        "Poll every N seconds instead of interval_minutes (0: use interval_minutes; tests, demos)",
        lo=0,
        hi=86_400,
    )
    retention_days: int = _opt(90, "Keep live snapshots this many days", lo=1, hi=3660)
    burn_rate_hours: float = _opt(
        3.0, "The burn rate is the spend per hour over this many last hours", lo=0.25, hi=168
    )
    delivery_attempts: int = _opt(
        3, "Attempts per notification within one poll (then again at the next poll)", lo=1, hi=10
    )
    delivery_deadline_seconds: float = _opt(
        20.0,
        "Longest a poll spends on one notification, retries included; the poll's figures and "
        "alerts are committed before any is sent",
        lo=1,
        hi=600,
    )
    give_up_hours: float = _opt(
        24.0, "A notification still not delivered after this many hours is abandoned", lo=1, hi=720
    )


@dataclass(frozen=True, kw_only=True)
class DigestSettings:
    channels: tuple[str, ...] = _opt(
        [],
        "[[channels]] names that get a daily digest of yesterday's spend per account, its top "
        "keys and models, against the 7-day mean (empty: no digest)",
    )
    at: str = _opt("08:00", "When the digest goes out (HH:MM, UTC)", check=_check_hhmm)

    @property
    def time(self) -> dt.time:
        """``at`` as a time of day (UTC)."""
        hour, minute = (int(part) for part in self.at.split(":"))
        return dt.time(hour, minute)


@dataclass(frozen=True, kw_only=True)
class GuardSettings:
    mode: str = _opt(
        "dry-run",
        'What a rule\'s act = "disable" | "cap" does: dry-run plans, records and announces '
        'the action ("would disable …") without sending it; enforce sends it to OpenRouter',
        choices=("dry-run", "enforce"),
    )
    apply_limits: bool = _opt(
        False,
        "The daemon makes OpenRouter match the [[limits]] tables by itself after each poll "
        "(sent in mode = enforce only); otherwise it reports the keys that drifted",
    )

    @property
    def enforce(self) -> bool:
        """Whether guard actions are sent to OpenRouter (else only planned and announced)."""
        return self.mode == "enforce"


@dataclass(frozen=True, kw_only=True)
class HaSettings:
    instance_name: str = _opt(
        "",
        "This daemon's name in status, /healthz and /metrics (empty: the host name and the "
        "process id, e.g. host-a:4242)",
    )
    heartbeat_seconds: float = _opt(
        10.0,
        "How often each lock's own connection is touched (well inside idle_session_timeout "
        "and TCP keepalive settings), each daemon records itself, and a standby tries to lead",
        lo=0.5,
        hi=300,
    )
    takeover_seconds: float = _opt(
        30.0,
        "A leader not heard from for this long is taken over by a standby (on PostgreSQL its "
        "lock's connection is ended); a database without a leader for this long plus one "
        "heartbeat is a problem in status",
        lo=2,
        hi=3600,
    )
