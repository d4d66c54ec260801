"""``[[channels]]`` and ``[[alerts]]``: parsed and validated into frozen objects.

Called by :func:`worker.config.load_settings`, which reports every problem found here in its
one :class:`~worker.core.errors.ConfigError`, each naming the rule or channel and the key. Channel
URLs are secrets (a Slack URL holds its tokens): they may come from ``url``, from the
environment (``url_env``) or from a file only its owner can read (``url_file``), are
registered with :func:`worker.core.logs.register_secret` as soon as they are read, and never
appear in a repr, an error, a log line or the database. Apprise itself is not imported here
(it costs seconds): :mod:`worker.alerts.deliver` checks the schemes where channels are used.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from worker.core.logs import register_secret

# metric → (what it measures, the subjects it exists for, its unit, its period)
# period: "day" / "month" fire once per UTC day / month; "crossing" once per crossing,
# re-armed when the value goes back across the threshold by HYSTERESIS.
METRICS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "spend_today": ("spend today (UTC) so far", ("account", "key"), "usd", "day"),
    "spend_month": ("spend this month (UTC) so far", ("account", "key"), "usd", "month"),
    "limit_used_percent": ("share of the key's limit used", ("key",), "percent", "crossing"),
    "balance": ("credit balance", ("account",), "usd", "crossing"),
    "runway_days": ("days of credit (or limit) left", ("account", "key"), "days", "crossing"),
    "spike": (
        "today's spend against the 7-day mean, scaled to the time of day",
        ("account", "key"),
        "percent",
        "day",
    ),
    "sync_failing": ("consecutive failed syncs", ("key",), "runs", "crossing"),
    "limits_drift": (
        "keys whose settings differ from their [[limits]] table",
        ("account", "key"),
        "keys",
        "crossing",
    ),
}
PER = ("account", "key")
HYSTERESIS = Decimal("0.05")
_RULE_KEYS = (
    "name",
    "metric",
    "above",
    "below",
    "per",
    "accounts",
    "keys",
    "users",
    "notify",
    "act",
    "restore",
)
# What a per-key rule may do to the key besides notifying (worker.guards), and when it undoes it.
ACTS = ("disable", "cap")
RESTORES = ("next_period", "manual")
_CHANNEL_KEYS = ("name", "url", "url_env", "url_file")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
# Query parameters whose values are credentials in some Apprise URLs, and generic webhooks
# whose path is often the secret itself (a webhook id or token).
_SECRET_PARAM_RE = re.compile(r"(?i)^[+:-]|key|token|secret|pass|auth|sig|webhook")
_WEBHOOK_SCHEMES = {"json", "jsons", "xml", "xmls", "form", "forms"}


@dataclass(frozen=True)
class Channel:
    """A place notifications go: a name and an Apprise URL (a secret: never shown)."""

    name: str
    url: str = field(repr=False)
    origin: str = "url"  # where the URL came from: url, url_env VAR, url_file PATH

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower()


@dataclass(frozen=True)
class AlertRule:
    """One ``[[alerts]]`` table: when ``metric`` of a subject is at or above (or at or below)
    each threshold, notify the channels once per period (see :data:`METRICS`)."""

    name: str
    metric: str
    direction: str  # above | below
    thresholds: tuple[Decimal, ...]
    per: str  # account | key
    notify: tuple[str, ...]
    accounts: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    act: str | None = None  # disable | cap: done when the last threshold is reached
    restore: str = "next_period"  # next_period | manual (guards undo)

    @property
    def acting_threshold(self) -> Decimal:
        """The threshold that acts: the highest of ``above``, the lowest of ``below``."""
        return self.thresholds[-1] if self.direction == "above" else self.thresholds[0]

    @property
    def unit(self) -> str:
        return METRICS[self.metric][2]

    @property
    def period(self) -> str:
        return METRICS[self.metric][3]


def secret_parts(url: str) -> list[str]:
    """The parts of a channel URL that are credentials, found without Apprise: the password,
    credential-like query values, and a generic webhook's path (see also
    :func:`worker.alerts.deliver.register_channel_secrets`, which adds Apprise's own view)."""
    parts = [url]
    try:
        split = urlsplit(url)
        password = split.password
    except ValueError:
        return parts
    if password:
        parts.append(unquote(password))
    for name, value in parse_qsl(split.query, keep_blank_values=False):
        if _SECRET_PARAM_RE.search(name):
            parts.append(value)
    if split.scheme.lower() in _WEBHOOK_SCHEMES and split.path.strip("/"):
        parts.append(split.path)
        parts.extend(segment for segment in split.path.split("/") if segment)
    return parts


def _read_url_file(path: Path) -> tuple[str | None, str | None]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, f"url_file {path} does not exist"
    except OSError as exc:
        return None, f"cannot read url_file {path}: {exc.strerror}"
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None, (
            f"url_file {path} is readable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}): run chmod 600 {path}"
        )
    try:
        return path.read_text(encoding="utf-8").strip(), None
    except (OSError, UnicodeDecodeError):
        return None, f"cannot read url_file {path}: not readable UTF-8 text"


def _channel(item: Any, label: str, env: Mapping[str, str]) -> tuple[Channel | None, list[str]]:
    if not isinstance(item, dict):
        return None, [f"[[channels]] in {label} must be tables"]
    name = item.get("name")
    where = (
        f"[[channels]] {name!r} in {label}" if isinstance(name, str) else f"[[channels]] in {label}"
    )
    problems = [f"{where}: unknown key {key!r}" for key in item if key not in _CHANNEL_KEYS]
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        problems.append(f"{where}: name must be a word of letters, digits, '-', '_' or '.'")
    sources = [key for key in ("url", "url_env", "url_file") if key in item]
    if len(sources) != 1:
        problems.append(f"{where}: give exactly one of url, url_env, url_file")
        return None, problems
    source = sources[0]
    value = item[source]
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: {source} must be a non-empty string")
        return None, problems
    url: str | None
    origin = source
    if source == "url":
        url = value.strip()
    elif source == "url_env":
        origin = f"url_env {value}"
        url = env.get(value, "").strip() or None
        if url is None:
            problems.append(f"{where}: url_env names {value}, which is not set or empty")
    else:
        origin = f"url_file {value}"
        url, problem = _read_url_file(Path(os.path.expanduser(value)))
        if problem:
            problems.append(f"{where}: {problem}")
    if url is not None:
        for part in secret_parts(url):
            register_secret(part)  # before any message could hold it
        if "://" not in url:
            problems.append(f"{where}: the URL ({origin}) must look like scheme://…")
    if problems or url is None:
        return None, problems
    return Channel(name=str(name), url=url, origin=origin), []


def _names(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    return None


def _thresholds(value: Any) -> tuple[Decimal, ...] | None:
    values = value if isinstance(value, list) else [value]
    if not values:
        return None
    found = []
    for number in values:
        if isinstance(number, bool) or not isinstance(number, int | float):
            return None
        if isinstance(number, float) and not math.isfinite(number):
            return None
        found.append(Decimal(str(number)))
    return tuple(sorted(set(found)))


def _rule(item: Any, label: str, channels: set[str]) -> tuple[AlertRule | None, list[str]]:
    if not isinstance(item, dict):
        return None, [f"[[alerts]] in {label} must be tables"]
    name = item.get("name")
    where = (
        f"[[alerts]] rule {name!r} in {label}"
        if isinstance(name, str)
        else f"[[alerts]] in {label}"
    )
    problems = [f"{where}: unknown key {key!r}" for key in item if key not in _RULE_KEYS]
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        problems.append(f"{where}: name must be a word of letters, digits, '-', '_' or '.'")
    metric = item.get("metric")
    if metric not in METRICS:
        problems.append(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
        return None, problems
    directions = [key for key in ("above", "below") if key in item]
    thresholds: tuple[Decimal, ...] | None = None
    if len(directions) != 1:
        problems.append(f"{where}: give exactly one of above, below")
    else:
        thresholds = _thresholds(item[directions[0]])
        if thresholds is None:
            problems.append(f"{where}: {directions[0]} must be a number or a list of numbers")
    subjects = METRICS[metric][1]
    per = item.get("per", "account" if "account" in subjects else "key")
    if per not in PER:
        problems.append(f'{where}: per must be "account" or "key", not {per!r}')
    elif per not in subjects:
        problems.append(
            f'{where}: metric {metric} exists per {subjects[0]} only: set per = "{subjects[0]}"'
        )
    scopes: dict[str, tuple[str, ...]] = {}
    for scope in ("accounts", "keys", "users"):
        if scope in item:
            names = _names(item[scope])
            if names is None:
                problems.append(f"{where}: {scope} must be a list of names")
            else:
                scopes[scope] = names
    if "keys" in scopes and per == "account":
        problems.append(f'{where}: keys = [...] chooses keys: set per = "key"')
    act, restore = item.get("act"), item.get("restore", "next_period")
    if act is not None:
        problems += _act_problems(where, act, str(per), str(metric), scopes)
    if restore not in RESTORES:
        problems.append(f'{where}: restore must be "next_period" or "manual", not {restore!r}')
    elif "restore" in item and act is None:
        problems.append(f"{where}: restore goes with act (the rule does nothing to undo)")
    notify = _names(item.get("notify"))
    if notify is None:
        problems.append(f'{where}: notify must list channel names (e.g. notify = ["ops"])')
    else:
        problems += [
            f"{where}: notify names channel {name!r}, which no [[channels]] table defines"
            for name in notify
            if name not in channels
        ]
    if problems or thresholds is None or notify is None:
        return None, problems
    return (
        AlertRule(
            name=str(name),
            metric=str(metric),
            direction=directions[0],
            thresholds=thresholds,
            per=str(per),
            notify=notify,
            act=act,
            restore=str(restore),
            **scopes,
        ),
        [],
    )


def _act_problems(
    where: str, act: Any, per: str, metric: str, scopes: Mapping[str, tuple[str, ...]]
) -> list[str]:
    """Why ``act`` cannot go on this rule (nothing may act by surprise)."""
    if act not in ACTS:
        return [f'{where}: act must be "disable" or "cap", not {act!r}']
    problems = []
    if per != "key":
        problems.append(f'{where}: act works on one key at a time: set per = "key"')
    elif METRICS[metric][3] not in ("day", "month"):
        problems.append(
            f"{where}: act needs a metric counted per day or month (spend_today, spend_month, "
            f"spike), not {metric}"
        )
    if not scopes.get("keys") and not scopes.get("accounts"):
        problems.append(
            f"{where}: a rule that acts must name its keys or accounts "
            '(keys = ["ci-*"] or accounts = ["production"])'
        )
    return problems


def parse_tables(
    data: Mapping[str, Any], label: str, env: Mapping[str, str]
) -> tuple[tuple[Channel, ...], tuple[AlertRule, ...], list[str]]:
    """The ``[[channels]]`` and ``[[alerts]]`` of a parsed TOML document, and every problem."""
    problems: list[str] = []
    channels: list[Channel] = []
    rules: list[AlertRule] = []
    for key, kind in (("channels", "[[channels]]"), ("alerts", "[[alerts]]")):
        if key in data and not isinstance(data[key], list):
            problems.append(f"{kind} in {label} must be an array of tables ({kind} headers)")
    raw_channels = data.get("channels") if isinstance(data.get("channels"), list) else []
    raw_rules = data.get("alerts") if isinstance(data.get("alerts"), list) else []
    seen: set[str] = set()
    for item in raw_channels or []:
        channel, found = _channel(item, label, env)
        problems += found
        if channel is not None:
            if channel.name in seen:
                problems.append(f"[[channels]] {channel.name!r} in {label}: the name is used twice")
            seen.add(channel.name)
            channels.append(channel)
    known = {c.name for c in channels} | {
        item.get("name") for item in raw_channels or [] if isinstance(item, dict)
    }
    names: set[str] = set()
    for item in raw_rules or []:
        rule, found = _rule(item, label, {str(n) for n in known if n})
        problems += found
        if rule is not None:
            if rule.name in names:
                problems.append(f"[[alerts]] rule {rule.name!r} in {label}: the name is used twice")
            names.add(rule.name)
            rules.append(rule)
    return tuple(channels), tuple(rules), problems
