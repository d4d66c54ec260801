"""``GET /key``: what OpenRouter says about the key used for the call."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from worker.errors import InvalidResponseError
from worker.logs import mask_text
from worker.openrouter.fields import (
    Invalid,
    data_object,
    money,
    optional_money,
    parse_json,
    show,
    signed_money,
    string,
)


@dataclass(frozen=True)
class KeyInfo:
    """What ``GET /key`` says about the key used for the call."""

    is_management_key: bool
    label: str
    limit: Decimal | None
    limit_remaining: Decimal | None
    usage: Decimal


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
        return KeyInfo(
            is_management_key=management,
            label=mask_text(string(data["label"], "label")),
            limit=optional_money(data["limit"], "limit"),
            limit_remaining=signed_money(data["limit_remaining"], "limit_remaining"),
            usage=money(data["usage"], "usage"),
        )
    except Invalid as exc:
        raise InvalidResponseError(
            f"invalid /key response: field {exc.field!r}: {exc.problem}"
        ) from None
