"""Configuration: TOML file + environment → one frozen, validated :class:`Settings`.

Where the file comes from, first match wins:

1. ``--config PATH`` on the command line;
2. ``$OPENROUTER_WATCHER_CONFIG``;
3. ``./config.toml`` if it exists;
4. nothing: built-in defaults.

Every key can then be overridden by an environment variable named
``OPENROUTER_WATCHER_<SECTION>_<KEY>`` in upper case, e.g. ``OPENROUTER_WATCHER_DATABASE_URL``
for ``[database] url``. Lists in the environment are comma separated; booleans are
``true/false/1/0/yes/no``. All problems are collected and reported in one :class:`ConfigError`
that names each key and where its value came from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from worker.errors import ConfigError

if TYPE_CHECKING:
    from worker.alerts.rules import AlertRule, Channel

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
class Settings:
    """The whole configuration, validated and immutable."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    openrouter: OpenRouterSettings = field(default_factory=OpenRouterSettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    digest: DigestSettings = field(default_factory=DigestSettings)
    # Arrays of tables ([[channels]], [[alerts]]): parsed by worker.alerts.rules.
    channels: tuple[Channel, ...] = ()
    alerts: tuple[AlertRule, ...] = ()
    source: str = "built-in defaults"

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some keys of one section changed (tests and commands use this)."""
        new_section = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: new_section})


TABLE_ARRAYS = ("channels", "alerts")
SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(Settings)
    if f.name not in ("source", *TABLE_ARRAYS)
}


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides ``[section] key``."""
    return f"{ENV_PREFIX}{section}_{key}".upper()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_env(raw: str, kind: Any) -> Any:
    """Turn an environment string into the field's type, or raise ValueError."""
    if kind is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("must be true or false")
    if kind is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError("must be a number") from None
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _check_value(value: Any, kind: Any, meta: Mapping[str, Any]) -> tuple[Any, str | None]:
    """Type and range check; returns the normalised value and a problem or None."""
    if kind is bool:
        if not isinstance(value, bool):
            return value, "must be true or false"
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, "must be a whole number"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, "must be a number"
        value = float(value)
        if not math.isfinite(value):
            return value, "must be a finite number"
    elif kind == tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            return value, "must be a list of strings"
        value = tuple(value)
    elif kind is str and not isinstance(value, str):
        return value, "must be a string"
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo:
        return value, f"must be at least {lo:g}"
    if hi is not None and value > hi:
        return value, f"must be at most {hi:g}"
    choices = meta.get("choices")
    if choices:
        if isinstance(value, str) and value.upper() in choices:
            value = value.upper()
        elif isinstance(value, str) and value.lower() in choices:
            value = value.lower()
        else:
            return value, f"must be one of {', '.join(choices)}"
    check = meta.get("check")
    if check is not None:
        problem = check(value)
        if problem:
            return value, problem
    return value, None


def find_config_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """Apply the file precedence: --config, $OPENROUTER_WATCHER_CONFIG, ./config.toml, none."""
    if path:
        return Path(path)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    if DEFAULT_CONFIG_FILE.is_file():
        return DEFAULT_CONFIG_FILE
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} does not exist: fix --config or ${CONFIG_ENV}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"configuration file {path} is not UTF-8 text: save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load, merge and validate the configuration. Raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    config_path = find_config_file(path, env)
    data = _read_toml(config_path) if config_path else {}
    file_label = str(config_path) if config_path else "defaults"
    problems: list[str] = []
    sections: dict[str, Any] = {}

    for name in data:
        if name in TABLE_ARRAYS:
            continue
        if name not in SECTIONS:
            problems.append(
                f"unknown section [{name}] in {file_label} (known: {', '.join(SECTIONS)})"
            )
        elif not isinstance(data[name], dict):
            problems.append(f"[{name}] in {file_label} must be a table")

    # The testing clock (worker.days) shares the prefix but is not a setting.
    known_env = {ENV_PREFIX + "CONFIG", ENV_PREFIX + "TESTING_CLOCK"}
    for section_name, cls in SECTIONS.items():
        raw = data.get(section_name, {})
        raw = raw if isinstance(raw, dict) else {}
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                problems.append(
                    f"unknown key [{section_name}] {key} in {file_label} "
                    f"(known: {', '.join(fields)})"
                )
        values: dict[str, Any] = {}
        for key, fld in fields.items():
            var = env_name(section_name, key)
            known_env.add(var)
            if var in env:
                origin = f"environment variable {var}"
                try:
                    value = _from_env(env[var], hints[key])
                except ValueError as exc:
                    problems.append(f"{origin} {exc}")
                    continue
            elif key in raw:
                origin = f"[{section_name}] {key} in {file_label}"
                value = raw[key]
            else:
                continue
            value, problem = _check_value(value, hints[key], fld.metadata)
            if problem:
                shown = "…" if section_name == "encryption" else repr(value)
                problems.append(f"{origin} {problem} (got {shown})")
            else:
                values[key] = value
        if not problems:
            sections[section_name] = cls(**values)

    from worker.alerts.rules import parse_tables

    channels, alerts, found = parse_tables(data, file_label, env)
    problems += found
    for item in data.get("channels") or []:
        if isinstance(item, dict) and isinstance(item.get("url_env"), str):
            known_env.add(item["url_env"])  # a channel's own variable may share the prefix
    digest = sections.get("digest")
    for name in digest.channels if digest else ():
        if name not in {c.name for c in channels}:
            problems.append(f"[digest] channels names {name!r}, which no [[channels]] defines")

    for var in env:
        if var.startswith(ENV_PREFIX) and var not in known_env:
            problems.append(f"unknown environment variable {var}")

    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return Settings(
        **sections,
        channels=channels,
        alerts=alerts,
        source=str(config_path) if config_path else "built-in defaults",
    )


def describe_options() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, doc) for every option, in order: for --help and the docs."""
    rows = []
    for section_name, cls in SECTIONS.items():
        for fld in dataclasses.fields(cls):
            default = fld.default if fld.default is not dataclasses.MISSING else []
            rows.append((section_name, fld.name, default, fld.metadata["doc"]))
    return rows
