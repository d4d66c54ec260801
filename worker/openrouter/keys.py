"""The account's keys and money: ``GET /key``, ``GET /keys``, ``GET /workspaces``,
``GET /credits``.

Running totals (usage today, this month, limits, the balance) are OpenRouter's own floating
point sums: they are rounded to 9 decimals (:func:`~worker.openrouter.fields.figure`) rather
than refused for a twelfth decimal, unlike the stored history of ``/activity``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.core.errors import InvalidResponseError
from worker.core.key_settings import KeySettings
from worker.core.logs import mask_text
from worker.openrouter.fields import (
    Invalid,
    boolean,
    count,
    data_object,
    figure,
    money,
    optional_figure,
    optional_money,
    optional_string,
    parse_json,
    show,
    signed_money,
    string,
    timestamp,
)

_SPEND_FIELDS = (
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
)


@dataclass(frozen=True)
class Spend:
    """What OpenRouter says a key has spent (USD; days, weeks — from Monday — and months are
    UTC), and its limit."""

    usage: Decimal
    daily: Decimal
    weekly: Decimal
    monthly: Decimal
    byok: Decimal
    byok_daily: Decimal
    byok_weekly: Decimal
    byok_monthly: Decimal
    limit: Decimal | None
    limit_remaining: Decimal | None
    limit_reset: str | None


@dataclass(frozen=True)
class KeyInfo:
    """What ``GET /key`` says about the key used for the call.

    ``label`` is OpenRouter's display form of the key (``sk-or-v1-0e6...1c96``: a few of its
    characters, not the key); it matches the same key's ``/keys`` label. Mask it for display.
    """

    is_management_key: bool
    label: str
    limit: Decimal | None
    limit_remaining: Decimal | None
    usage: Decimal
    spend: Spend | None = None  # when the answer carries every running total


@dataclass(frozen=True)
class CatalogKey:
    """One key of the account, as ``GET /keys`` lists it (never the key itself)."""

    hash: str  # OpenRouter's opaque id of the key (64 hex digits)
    name: str
    label: str
    workspace_id: str | None
    disabled: bool
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    expires_at: dt.datetime | None
    spend: Spend
    include_byok_in_limit: bool = False  # BYOK spend counts against the limit

    @property
    def settings(self) -> KeySettings:
        """What the watcher may change of the key (``PATCH /keys/{hash}``)."""
        return KeySettings(
            disabled=self.disabled,
            limit=self.spend.limit,
            limit_reset=self.spend.limit_reset,
            include_byok_in_limit=self.include_byok_in_limit,
        )


@dataclass(frozen=True)
class Credits:
    """``GET /credits``: what the account bought and used; the balance is the difference."""

    total_credits: Decimal
    total_usage: Decimal

    @property
    def balance(self) -> Decimal:
        return self.total_credits - self.total_usage


def listed_hash(secret: str) -> str:
    """The hash ``/keys`` would list for this key, if it is the SHA-256 of the key (no
    published source confirms it: callers try it first and fall back on the label)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _spend(data: Mapping[str, Any]) -> Spend:
    for field in (*_SPEND_FIELDS, "limit", "limit_remaining", "limit_reset"):
        if field not in data:
            raise Invalid(field, "is missing")
    figures = {field: figure(data[field], field) for field in _SPEND_FIELDS}
    return Spend(
        usage=figures["usage"],
        daily=figures["usage_daily"],
        weekly=figures["usage_weekly"],
        monthly=figures["usage_monthly"],
        byok=figures["byok_usage"],
        byok_daily=figures["byok_usage_daily"],
        byok_weekly=figures["byok_usage_weekly"],
        byok_monthly=figures["byok_usage_monthly"],
        limit=optional_figure(data["limit"], "limit"),
        limit_remaining=optional_figure(data["limit_remaining"], "limit_remaining", signed=True),
        limit_reset=optional_string(data["limit_reset"], "limit_reset"),
    )


def parse_key(text: str) -> KeyInfo:
    """Validate a ``/key`` body into :class:`KeyInfo`; raise :class:`InvalidResponseError`."""
    data = data_object(parse_json(text, "/key"), "/key")
    try:
        for field in ("is_management_key", "label", "limit", "limit_remaining", "usage"):
            if field not in data:
                raise Invalid(field, "is missing")
        management = data["is_management_key"]
        if type(management) is not bool:
            raise Invalid("is_management_key", f"must be true or false, got {show(management)}")
        complete = all(field in data for field in (*_SPEND_FIELDS, "limit_reset"))
        return KeyInfo(
            is_management_key=management,
            label=string(data["label"], "label"),
            limit=optional_money(data["limit"], "limit"),
            limit_remaining=signed_money(data["limit_remaining"], "limit_remaining"),
            usage=money(data["usage"], "usage"),
            spend=_spend(data) if complete else None,
        )
    except Invalid as exc:
        raise InvalidResponseError(
            f"invalid /key response: field {exc.field!r}: {exc.problem}"
        ) from None


def _catalog_key(item: Any) -> CatalogKey:
    if not isinstance(item, dict):
        raise Invalid("(key)", f"must be an object, got {show(item)}")
    for field in ("hash", "name", "label", "disabled", "created_at", "workspace_id"):
        if field not in item:
            raise Invalid(field, "is missing")
    key_hash = string(item["hash"], "hash")
    if not key_hash or len(key_hash) > 128:
        raise Invalid("hash", f"must be a key id of 1 to 128 characters, got {show(key_hash)}")
    return CatalogKey(
        hash=key_hash,
        name=mask_text(string(item["name"], "name")),
        label=string(item["label"], "label"),
        workspace_id=optional_string(item["workspace_id"], "workspace_id"),
        disabled=boolean(item["disabled"], "disabled"),
        created_at=timestamp(item["created_at"], "created_at"),
        updated_at=timestamp(item.get("updated_at"), "updated_at"),
        expires_at=timestamp(item.get("expires_at"), "expires_at"),
        spend=_spend(item),
        include_byok_in_limit=boolean(
            item.get("include_byok_in_limit", False), "include_byok_in_limit"
        ),
    )


def parse_keys(text: str) -> list[CatalogKey]:
    """Validate one ``/keys`` page; raise :class:`InvalidResponseError` naming the item."""
    body = parse_json(text, "/keys")
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise InvalidResponseError("invalid /keys response: expected an object with a 'data' list")
    keys = []
    for index, item in enumerate(body["data"]):
        try:
            keys.append(_catalog_key(item))
        except Invalid as exc:
            raise InvalidResponseError(
                f"invalid /keys response: key {index} field {exc.field!r}: {exc.problem}"
            ) from None
    return keys


def parse_updated_key(text: str) -> CatalogKey:
    """Validate the answer of ``PATCH /keys/{hash}``: ``{"data": <the key, as /keys lists it>}``."""
    data = data_object(parse_json(text, "/keys/{hash}"), "/keys/{hash}")
    try:
        return _catalog_key(data)
    except Invalid as exc:
        raise InvalidResponseError(
            f"invalid /keys/{{hash}} response: field {exc.field!r}: {exc.problem}"
        ) from None


def parse_workspaces(text: str) -> tuple[list[str], int]:
    """One ``/workspaces`` page: the workspace ids and the total count."""
    body = parse_json(text, "/workspaces")
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise InvalidResponseError(
            "invalid /workspaces response: expected an object with a 'data' list"
        )
    try:
        ids = [
            string(item.get("id") if isinstance(item, dict) else None, "id")
            for item in body["data"]
        ]
        total = count(body.get("total_count", len(ids)), "total_count")
    except Invalid as exc:
        raise InvalidResponseError(
            f"invalid /workspaces response: field {exc.field!r}: {exc.problem}"
        ) from None
    return ids, total


def parse_credits(text: str) -> Credits:
    """Validate a ``/credits`` body."""
    data = data_object(parse_json(text, "/credits"), "/credits")
    try:
        for field in ("total_credits", "total_usage"):
            if field not in data:
                raise Invalid(field, "is missing")
        return Credits(
            total_credits=figure(data["total_credits"], "total_credits"),
            total_usage=figure(data["total_usage"], "total_usage"),
        )
    except Invalid as exc:
        raise InvalidResponseError(
            f"invalid /credits response: field {exc.field!r}: {exc.problem}"
        ) from None
