"""Loading the configuration: TOML file + environment → one frozen, validated :class:`Settings`.

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
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from worker.config.sections import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    DatabaseSettings,
    DigestSettings,
    EncryptionSettings,
    GuardSettings,
    HaSettings,
    HttpSettings,
    LiveSettings,
    LoggingSettings,
    OpenRouterSettings,
    ScheduleSettings,
    SyncSettings,
)
from worker.core.errors import ConfigError

if TYPE_CHECKING:
    from worker.config.limits import LimitTable
    from worker.config.rules import AlertRule, Channel


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
    guards: GuardSettings = field(default_factory=GuardSettings)
    ha: HaSettings = field(default_factory=HaSettings)
    # Arrays of tables ([[channels]], [[alerts]]: worker.config.rules; [[limits]]:
    # worker.config.limits).
    channels: tuple[Channel, ...] = ()
    alerts: tuple[AlertRule, ...] = ()
    limits: tuple[LimitTable, ...] = ()
    source: str = "built-in defaults"

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some keys of one section changed (tests and commands use this)."""
        new_section = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: new_section})


TABLE_ARRAYS = ("channels", "alerts", "limits")
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

    # The testing clock (worker.core.days) shares the prefix but is not a setting.
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

    from worker.config.limits import parse_limits
    from worker.config.rules import parse_tables

    channels, alerts, found = parse_tables(data, file_label, env)
    problems += found
    limits, found = parse_limits(data, file_label)
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

    ha = sections.get("ha")
    if ha is not None and ha.heartbeat_seconds >= ha.takeover_seconds:
        problems.append(
            f"[ha] heartbeat_seconds ({ha.heartbeat_seconds:g}) must be less than "
            f"takeover_seconds ({ha.takeover_seconds:g}): a leader beats several times before "
            "it is taken over"
        )

    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return Settings(
        **sections,
        channels=channels,
        alerts=alerts,
        limits=limits,
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
