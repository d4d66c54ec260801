"""What the fake OpenRouter answers: each endpoint's body from the fake's data, by the
contract (``shared/openrouter/openapi-*.yaml``): Bearer keys, management keys only where the
contract says so (403 otherwise), the error bodies ``{"error": {"code": N, "message": …}}``."""

from __future__ import annotations

import collections
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from worker.core.days import completed_window, utc_now
from worker.testing.activity_data import dumps
from worker.testing.fake_account import FakeAccount, FakeAccountKey, listing
from worker.testing.fake_http import API_PREFIX, Fault, error_body, row_day

ENDPOINTS = ("/activity", "/keys", "/workspaces", "/credits", "/analytics/query")


@dataclass
class FakeKey:
    """A key the fake knows: a management key (with its account) or an ordinary one."""

    management: bool
    label: str
    limit: Decimal | None
    rows: list[dict[str, Any]]
    faults: collections.deque[Fault] = field(default_factory=collections.deque)
    forever: Fault | None = None
    account: FakeAccount | None = None  # a management key's account (keys, credits, history)
    listed: FakeAccountKey | None = None  # an ordinary key's entry in its account's /keys


def answer(
    raw: bytes,
    path: str,
    query: dict[str, str],
    key: FakeKey | None,
    today: dt.date,
    rows: list[dict[str, Any]],
) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) for one request of ``key`` (None: unknown), on ``today``;
    ``rows``: the key's own activity rows, read under the fake's lock."""
    endpoint = path.removeprefix(API_PREFIX)
    if key is None:
        status = 401 if endpoint in (*ENDPOINTS, "/key") else 404
        return status, error_body(status), {}
    if endpoint == "/key":
        return 200, dumps({"data": key_info(key, rows)}), {}
    if endpoint not in ENDPOINTS:
        return 404, error_body(404), {}
    if not key.management:
        return 403, error_body(403), {}
    account = key.account
    if endpoint == "/activity":
        return (*activity(key, query, today, rows), {})
    if endpoint == "/analytics/query":
        body = json.loads(raw or b"{}")
        if account is None:
            account = FakeAccount(keys=[], unattributed=key.rows)
        return account.analytics(body)
    if account is None:  # a management key without an account: nothing more to list
        account = FakeAccount(keys=[], unattributed=key.rows)
    if endpoint == "/keys":
        return 200, dumps({"data": account.list_keys(query)}), {}
    if endpoint == "/credits":
        return 200, dumps({"data": account.credits()}), {}
    # /workspaces
    if account.workspaces is None:
        return 403, error_body(403), {}
    offset, limit = int(query.get("offset") or 0), int(query.get("limit") or 50)
    page = [{"id": w, "name": f"workspace {w[:8]}"} for w in account.workspaces]
    body_out = {"data": page[offset : offset + limit], "total_count": len(page)}
    return 200, dumps(body_out), {}


def activity(
    key: FakeKey, query: dict[str, str], today: dt.date, rows: list[dict[str, Any]]
) -> tuple[int, str]:
    """``/activity``: the window, or one day, of the account or of one of its keys."""
    first, last = completed_window(today)
    wanted: dt.date | None = None
    if "date" in query:
        text = query["date"]
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                raise ValueError(text)
            wanted = dt.date.fromisoformat(text)
        except ValueError:
            return 400, error_body(400, "Invalid date format: use YYYY-MM-DD")
        if not first <= wanted <= last:
            return 400, error_body(400, "Date must be within the last 30 (completed) UTC days")
    if key.account is not None:
        hash_ = query.get("api_key_hash")
        return 200, dumps({"data": key.account.activity(today, wanted, hash_)})
    if query.get("api_key_hash"):
        return 200, dumps({"data": []})  # no account: no key of it to narrow to
    selected = []
    for row in rows:
        day = row_day(row)
        if day is None:  # a deliberately broken row: pass it on, the client must reject it
            selected.append(row)
        elif (day == wanted) if wanted is not None else (first <= day <= last):
            selected.append(row)
    return 200, dumps({"data": selected})


def key_info(key: FakeKey, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``/key``: what OpenRouter says of the calling key."""
    if key.listed is not None:
        figures = listing(key.listed)
        return {**figures, "is_management_key": False, "is_provisioning_key": False,
                "is_free_tier": False}  # fmt: skip
    usage = sum(
        (
            Decimal(str(r.get("usage", 0)))
            for r in rows
            if isinstance(r.get("usage"), int | Decimal | str)
        ),
        Decimal(0),
    )
    byok = sum(
        (
            Decimal(str(r.get("byok_usage_inference", 0)))
            for r in rows
            if isinstance(r.get("byok_usage_inference"), int | Decimal | str)
        ),
        Decimal(0),
    )
    return {
        "label": key.label,
        "limit": key.limit,
        "limit_remaining": None if key.limit is None else key.limit - usage,
        "limit_reset": None if key.limit is None else "monthly",
        "usage": usage,
        "usage_daily": Decimal(0),
        "usage_weekly": Decimal(0),
        "usage_monthly": usage,
        "byok_usage": byok,
        "byok_usage_daily": Decimal(0),
        "byok_usage_weekly": Decimal(0),
        "byok_usage_monthly": byok,
        "is_free_tier": False,
        "is_management_key": key.management,
        "is_provisioning_key": key.management,
        "include_byok_in_limit": False,
        "creator_user_id": "user_fake0000000000000000000",
        "expires_at": None,
        "rate_limit": {
            "requests": -1,
            "interval": "10s",
            "note": "This field is deprecated and safe to ignore.",
        },
    }


_CHANGES: dict[str, tuple[type | tuple[type, ...], bool]] = {  # field: (types, may be null)
    "disabled": (bool, False),
    "limit": ((int, float, Decimal), True),
    "limit_reset": (str, True),
    "include_byok_in_limit": (bool, False),
    "name": (str, False),
}
RESETS = ("daily", "weekly", "monthly")


def change_key(raw: bytes, path: str, key: FakeKey | None) -> tuple[int, str, dict[str, str]]:
    """``PATCH /keys/{hash}`` (operation ``updateKeys``): a management key changes one key of
    its account; the fake keeps what it was sent, so ``/keys`` and ``/key`` show it."""
    endpoint = path.removeprefix(API_PREFIX)
    if not endpoint.startswith("/keys/") or endpoint.count("/") != 2:
        return 404, error_body(404), {}
    if key is None or not key.management:
        return 401, error_body(401), {}
    try:
        body = json.loads(raw or b"null", parse_float=Decimal)
    except ValueError:
        return 400, error_body(400, "Invalid JSON body"), {}
    if not isinstance(body, dict) or not body:
        return 400, error_body(400, "Expected an object of fields to change"), {}
    for name, value in body.items():
        if name not in _CHANGES:
            return 400, error_body(400, f"Unknown field {name}"), {}
        types, nullable = _CHANGES[name]
        if value is None and nullable:
            continue
        if isinstance(value, bool) != (types is bool) or not isinstance(value, types):
            return 400, error_body(400, f"Invalid value for {name}"), {}
        if name == "limit" and Decimal(str(value)) < 0:
            return 400, error_body(400, "limit must not be negative"), {}
        if name == "limit_reset" and value not in RESETS:
            return 400, error_body(400, "limit_reset must be daily, weekly, monthly or null"), {}
    found = key.account.key(endpoint.rsplit("/", 1)[1]) if key.account is not None else None
    if found is None or found.deleted:
        return 404, error_body(404), {}
    for name, value in body.items():
        setattr(
            found, name, Decimal(str(value)) if name == "limit" and value is not None else value
        )
    found.updated_at = utc_now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the testing clock too
    return 200, dumps({"data": listing(found)}), {}
