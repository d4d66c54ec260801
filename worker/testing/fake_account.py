"""An OpenRouter account for the fake: its keys, workspaces, credits and a year of history.

One generated world, consistent by construction: the account's ``/activity`` is the sum of its
keys' rows (a deleted key's rows included: OpenRouter still counts them, ``/keys`` no longer
lists it), ``/activity?api_key_hash=`` is one key's, ``/analytics/query`` sums the same rows
per day and model over up to 365 days, ``/credits`` and ``/keys`` report the same money.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from worker.core.days import completed_window
from worker.testing.activity_data import dumps, generate_activity

DEFAULT_WORKSPACE = "00000000-0000-4000-8000-000000000000"
_METRICS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens")
_MONEY = ("usage", "byok_usage_inference")


def key_hash(secret: str) -> str:
    """The hash ``/keys`` lists for a key: SHA-256 of the key, as the fake assumes it."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class FakeAccountKey:
    """One key of the account, as ``GET /keys`` would list it, with its activity."""

    hash: str
    name: str
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # raw ActivityItems, any age
    workspace_id: str | None = None  # None: the default workspace
    disabled: bool = False
    deleted: bool = False  # no longer listed; its rows still count in the account's
    limit: Decimal | None = None
    limit_reset: str | None = "monthly"  # shown while there is a limit
    include_byok_in_limit: bool = False
    updated_at: str | None = None  # set by a change (PATCH /keys/{hash})
    secret: str | None = None  # the key itself, when a test registers it as ordinary
    spend_today: Decimal = Decimal(0)  # usage_daily: today is never in the 30-day window
    created_at: str = "2025-01-01T00:00:00Z"


@dataclass
class FakeAccount:
    """Everything OpenRouter knows about one account (see the module docstring)."""

    keys: list[FakeAccountKey]
    unattributed: list[dict[str, Any]] = field(default_factory=list)
    workspaces: list[str] | None = None  # None: /workspaces is refused (403)
    total_credits: Decimal = Decimal("100000")
    page_size: int = 100
    analytics_row_limit: int = 10_000
    analytics_per_minute: int = 64
    analytics_window: float = 60.0  # seconds over which analytics_per_minute counts
    # The Retry-After of a 429 from analytics: None for the true wait (until the oldest request
    # of the window leaves it); OpenRouter has been seen to send a few seconds instead.
    analytics_retry_after: int | None = None
    # The clock the window is counted on (a test may move it on, as if time had passed).
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _posts: collections.deque[float] = field(default_factory=collections.deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def key(self, wanted: str) -> FakeAccountKey | None:
        return next((k for k in self.keys if k.hash == wanted), None)

    def all_rows(self) -> Iterable[dict[str, Any]]:
        for account_key in self.keys:
            yield from account_key.rows
        yield from self.unattributed

    # -- the endpoints -----------------------------------------------------------------------

    def activity(self, today: dt.date, wanted: dt.date | None, hash_: str | None) -> list[Any]:
        """``/activity``'s rows: the account's (summed per day, model and endpoint across its
        keys) or one key's, in the window or on one day."""
        first, last = completed_window(today)
        if hash_ is not None:
            found = self.key(hash_)
            rows: Iterable[dict[str, Any]] = found.rows if found is not None else []
        else:
            rows = _merged(self.all_rows())
        return [r for r in rows if _in(r, wanted, first, last)]

    def list_keys(self, query: dict[str, str]) -> list[dict[str, Any]]:
        workspace = query.get("workspace_id") or DEFAULT_WORKSPACE
        with_disabled = query.get("include_disabled") == "true"
        listed = [
            k
            for k in self.keys
            if not k.deleted
            and (k.workspace_id or DEFAULT_WORKSPACE) == workspace
            and (with_disabled or not k.disabled)
        ]
        offset = int(query.get("offset") or 0)
        return [listing(k) for k in listed[offset : offset + self.page_size]]

    def credits(self) -> dict[str, Any]:
        used = sum((_money(r["usage"]) for r in self.all_rows()), Decimal(0))
        today = sum((k.spend_today for k in self.keys), Decimal(0))
        return {"total_credits": self.total_credits, "total_usage": used + today}

    def analytics(self, body: dict[str, Any]) -> tuple[int, str, dict[str, str]]:
        """``POST /analytics/query``: (status, body, headers)."""
        with self._lock:
            now = self.clock()
            while self._posts and self._posts[0] <= now - self.analytics_window:
                self._posts.popleft()
            if len(self._posts) >= self.analytics_per_minute:
                wait = self.analytics_retry_after or max(
                    1, int(self._posts[0] + self.analytics_window - now + 0.999)
                )
                error = {"error": {"code": 429, "message": "Rate limit exceeded"}}
                return 429, json.dumps(error), {"Retry-After": str(wait)}
            self._posts.append(now)
        start = dt.date.fromisoformat(body["time_range"]["start"][:10])
        end = dt.date.fromisoformat(body["time_range"]["end"][:10])  # exclusive
        filters = body.get("filters") or []
        rows: Iterable[dict[str, Any]] = self.all_rows()
        warnings: list[str] = []
        for spec in filters:
            if spec["field"] == "api_key_id":
                found = self.key(str(spec["value"]))
                if found is None or found.deleted:
                    warnings.append(f"Could not resolve api_key_id filter value {spec['value']}")
                    rows = []
                else:
                    rows = found.rows
        totals: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            day = str(row["date"])[:10]
            if not start.isoformat() <= day < end.isoformat():
                continue
            total = totals.setdefault((day, row["model"]), _zero())
            for name in (*_METRICS, *_MONEY):
                total[name] += _money(row[name]) if name in _MONEY else row[name]
        answer = [_analytics_row(day, model, t) for (day, model), t in sorted(totals.items())]
        limit = min(int(body.get("limit") or 1000), self.analytics_row_limit)
        data = {
            "data": answer[:limit],
            "metadata": {"row_count": len(answer[:limit]), "truncated": len(answer) > limit,
                         "query_time_ms": 3},
            "warnings": warnings,
        }  # fmt: skip
        return 200, dumps({"data": data}), {}


def _in(row: dict[str, Any], wanted: dt.date | None, first: dt.date, last: dt.date) -> bool:
    try:
        day = dt.date.fromisoformat(str(row.get("date"))[:10])
    except ValueError:
        return True  # a deliberately broken row: pass it on, the client must reject it
    return day == wanted if wanted is not None else first <= day <= last


def _money(value: Any) -> Decimal:
    return Decimal(str(value))


def _zero() -> dict[str, Any]:
    return {**{name: 0 for name in _METRICS}, **{name: Decimal(0) for name in _MONEY}}


def _merged(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of several keys summed per (day, model, endpoint), as OpenRouter groups them."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        day = str(row["date"])[:10]
        key = (day, row["model"], row["endpoint_id"])
        if key not in merged:
            merged[key] = {**row, "date": day, **{m: _money(row[m]) for m in _MONEY}}
            continue
        total = merged[key]
        for name in _METRICS:
            total[name] += row[name]
        for name in _MONEY:
            total[name] += _money(row[name])
    return list(merged.values())


def _analytics_row(day: str, model: str, total: dict[str, Any]) -> dict[str, Any]:
    return {
        "date__day": f"{day}T00:00:00.000Z",
        "model": model,
        # Count metrics arrive as strings from the real API: so they do here.
        "request_count": str(total["requests"]),
        "tokens_prompt": str(total["prompt_tokens"]),
        "tokens_completion": total["completion_tokens"],
        "reasoning_tokens": total["reasoning_tokens"],
        "total_usage": total["usage"] + total["byok_usage_inference"],
        "byok_usage": total["byok_usage_inference"],
    }


def listing(k: FakeAccountKey) -> dict[str, Any]:
    used = sum((_money(r["usage"]) for r in k.rows), Decimal(0)) + k.spend_today
    byok = sum((_money(r["byok_usage_inference"]) for r in k.rows), Decimal(0))
    # The limit counts the spend of its period (the fake's week is today only, its month all).
    spent = {"daily": k.spend_today, "weekly": k.spend_today, "monthly": used, None: used}
    reset = k.limit_reset if k.limit is not None else None
    return {
        "hash": k.hash,
        "name": k.name,
        "label": k.label,
        "disabled": k.disabled,
        "limit": k.limit,
        "limit_remaining": None if k.limit is None else k.limit - spent[reset],
        "limit_reset": reset,
        "include_byok_in_limit": k.include_byok_in_limit,
        "usage": used,
        "usage_daily": k.spend_today,
        "usage_weekly": k.spend_today,
        "usage_monthly": used,
        "byok_usage": byok,
        "byok_usage_daily": Decimal(0),
        "byok_usage_weekly": Decimal(0),
        "byok_usage_monthly": byok,
        "created_at": k.created_at,
        "updated_at": k.updated_at,
        "expires_at": None,
        "creator_user_id": "user_fake0000000000000000000",
        "workspace_id": k.workspace_id or DEFAULT_WORKSPACE,
    }


def generate_account(
    *,
    today: dt.date,
    keys: int = 3,
    days: int = 30,
    models: int = 3,
    seed: int = 0,
    deleted: int = 0,
    secrets: bool = True,
) -> FakeAccount:
    """An account of ``keys`` keys (the last ``deleted`` of them deleted), each with ``days``
    days of activity on ``models`` models; key ``n``'s key string is
    ``sk-or-v1-fake-<seed>-<n>…`` (its hash the SHA-256 of it) when ``secrets``."""
    account_keys = []
    for n in range(keys):
        secret = f"sk-or-v1-fake-{seed:04d}-{n:04d}-" + "0" * 40
        account_keys.append(
            FakeAccountKey(
                hash=key_hash(secret),
                name=f"key {n}",
                label=f"sk-or-v1-{n:03d}...{seed:03d}",
                rows=generate_activity(today=today, days=days, models=models, seed=seed * 1000 + n),
                deleted=n >= keys - deleted,
                secret=secret if secrets else None,
            )
        )
    return FakeAccount(keys=account_keys)


def replace_key(account: FakeAccount, wanted: str, **changes: Any) -> None:
    """Change one key of the account in place (e.g. ``deleted=True``, new ``rows``)."""
    found = account.key(wanted)
    if found is None:
        raise KeyError(wanted)
    for name, value in changes.items():
        if name not in {f.name for f in dataclasses.fields(found)}:
            raise TypeError(f"FakeAccountKey has no field {name!r}")
        setattr(found, name, value)
