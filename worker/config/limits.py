"""``[[limits]]``: the spend limits a team declares for its OpenRouter keys, parsed, validated,
and matched to the keys of the accounts.

A table names keys by their name on OpenRouter or by a shell glob (``"ci-*"``), optionally
only in some accounts (the names of their registered management keys), and says the limit
they must have: ``limit`` in USD (more than 0), ``reset`` (``daily``, ``weekly`` — Monday to
Sunday —, ``monthly``, or ``none``: the limit never resets; OpenRouter resets at midnight UTC)
and, optionally, ``include_byok`` (whether BYOK spend counts against it; left as it is when
not given). A key that two tables match is an error naming both: the policy must say one
thing per key. Matching needs the keys, so it happens when they are known
(:func:`table_for`, by ``limits plan``, ``limits apply`` and the daemon), not at load time.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.core.errors import ConfigError

RESETS = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "none": None}
_KEYS = ("name", "keys", "accounts", "limit", "reset", "include_byok")
MAX_LIMIT = Decimal(10) ** 9


@dataclass(frozen=True)
class LimitTable:
    """One ``[[limits]]`` table: which keys, and the limit they must have."""

    label: str  # how messages name it: its name, or its position and keys
    keys: tuple[str, ...]  # names or shell globs of keys on OpenRouter
    accounts: tuple[str, ...]  # names of registered management keys (empty: every account)
    limit: Decimal  # USD
    reset: str | None  # daily | weekly | monthly | None (never)
    include_byok: bool | None  # None: leave the key's setting as it is

    def matches(self, account: str, key: str) -> bool:
        """Whether this table names ``key`` of ``account`` (globs are case-sensitive)."""
        if self.accounts and account not in self.accounts:
            return False
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.keys)

    def wanted(self) -> dict[str, Any]:
        """The settings a matched key must have (``PATCH /keys/{hash}``'s field names)."""
        found: dict[str, Any] = {"limit": self.limit, "limit_reset": self.reset}
        if self.include_byok is not None:
            found["include_byok_in_limit"] = self.include_byok
        return found


def table_for(tables: Sequence[LimitTable], account: str, key: str) -> LimitTable | None:
    """The one table that matches ``key`` of ``account`` (None: no table does); a
    :class:`ConfigError` naming both when two do."""
    found = [table for table in tables if table.matches(account, key)]
    if len(found) > 1:
        raise ConfigError(
            f"invalid configuration: {found[0].label} and {found[1].label} both match key "
            f"{key!r} of account {account!r}: make them name different keys"
        )
    return found[0] if found else None


def _names(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    return None


def _table(item: Any, index: int, label: str) -> tuple[LimitTable | None, list[str]]:
    if not isinstance(item, dict):
        return None, [f"[[limits]] in {label} must be tables"]
    name = item.get("name")
    keys = _names(item.get("keys"))
    shown = f"[[limits]] {name!r}" if isinstance(name, str) and name else f"[[limits]] #{index}"
    if keys is not None:
        shown += f" (keys {', '.join(repr(k) for k in keys)})"
    where = f"{shown} in {label}"
    problems = [f"{where}: unknown key {key!r}" for key in item if key not in _KEYS]
    if keys is None:
        problems.append(f'{where}: keys must name keys or globs, e.g. keys = ["ci-*"]')
    accounts: tuple[str, ...] = ()
    if "accounts" in item:
        named = _names(item["accounts"])
        if named is None:
            problems.append(f"{where}: accounts must be a list of account names")
        else:
            accounts = named
    raw = item.get("limit")
    limit = None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        problems.append(f"{where}: limit must be a number of USD, e.g. limit = 25")
    elif raw <= 0:
        problems.append(f"{where}: limit must be more than 0 (got {raw}); lift a limit by hand")
    elif raw > MAX_LIMIT:
        problems.append(f"{where}: limit must be at most {MAX_LIMIT:,} USD")
    else:
        limit = Decimal(str(raw))
    reset = item.get("reset")
    if reset not in RESETS:
        problems.append(f'{where}: reset must be "daily", "weekly", "monthly" or "none"')
    include_byok = item.get("include_byok")
    if include_byok is not None and not isinstance(include_byok, bool):
        problems.append(f"{where}: include_byok must be true or false")
    if problems or keys is None or limit is None:
        return None, problems
    table = LimitTable(shown, keys, accounts, limit, RESETS[str(reset)], include_byok)
    return table, []


def parse_limits(data: Mapping[str, Any], label: str) -> tuple[tuple[LimitTable, ...], list[str]]:
    """The ``[[limits]]`` of a parsed TOML document, and every problem found in them."""
    raw = data.get("limits")
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        return (), [f"[[limits]] in {label} must be an array of tables ([[limits]] headers)"]
    tables: list[LimitTable] = []
    problems: list[str] = []
    for index, item in enumerate(raw, 1):
        table, found = _table(item, index, label)
        problems += found
        if table is not None:
            tables.append(table)
    # Two tables naming the same key (or glob) in a common account can never both hold.
    for n, first in enumerate(tables):
        for second in tables[n + 1 :]:
            common = set(first.keys) & set(second.keys)
            shared = not first.accounts or not second.accounts or first.accounts == second.accounts
            if common and (shared or set(first.accounts) & set(second.accounts)):
                problems.append(
                    f"{first.label} and {second.label} in {label} both name "
                    f"{sorted(common)[0]!r}: make them name different keys"
                )
    return tuple(tables), problems
