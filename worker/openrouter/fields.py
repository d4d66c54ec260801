"""The contract's field checks, shared by every OpenRouter answer we parse.

Money is parsed as :class:`~decimal.Decimal` straight from the JSON text (never through a binary
float); a value that breaks the contract raises :class:`Invalid` naming the field, and the
caller adds where it was (row index, endpoint) and turns it into
:class:`~worker.core.errors.InvalidResponseError`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from worker.core.errors import InvalidResponseError
from worker.core.logs import mask_text

# usage_stats.cost is Numeric(18, 9): 9 decimals, 9 integer digits.
MONEY_DECIMALS = 9
MONEY_LIMIT = Decimal(10) ** (18 - MONEY_DECIMALS)
NANO = Decimal(1).scaleb(-MONEY_DECIMALS)
# Counters are BIGINT: a count that does not fit is a broken answer, not a number to store.
COUNT_LIMIT = 2**63


class Invalid(Exception):
    """A contract violation in one field; the caller says where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem


def show(value: Any) -> str:
    """A short, masked rendering of a bad value for an error message."""
    text = json.dumps(value, default=str) if not isinstance(value, Decimal) else str(value)
    text = mask_text(text)
    return text if len(text) <= 60 else text[:57] + "..."


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser would accept them as floats.
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json(text: str, what: str) -> Any:
    """The body as JSON, every non-integer number an exact Decimal; or InvalidResponseError."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidResponseError(f"invalid {what} response: body is not JSON ({exc})") from None
    except RecursionError:
        raise InvalidResponseError(
            f"invalid {what} response: body is nested too deeply to be an answer"
        ) from None


def count(value: Any, field: str) -> int:
    """A non-negative JSON integer below 2**63 (``type is int`` keeps bool out, as JSON wants)."""
    if type(value) is int and 0 <= value < COUNT_LIMIT:
        return value
    if type(value) is int and value >= COUNT_LIMIT:
        raise Invalid(field, f"must be below 2^63, got {show(value)}")
    raise Invalid(field, f"must be a non-negative integer, got {show(value)}")


def money(value: Any, field: str) -> Decimal:
    """A non-negative JSON number below 10**9 with at most 9 decimals, as a Decimal.

    At most 9 decimals is tested by quantizing: a value with more changes (and 0.300000000000
    does not, so trailing zeros pass). Quantizing is safe after the range test: below 10**9 it
    needs at most 18 digits.
    """
    if type(value) is Decimal:
        if 0 <= value < MONEY_LIMIT and value.quantize(NANO) == value:
            return value
    elif type(value) is int and 0 <= value < MONEY_LIMIT:
        return Decimal(value)
    if type(value) not in (int, Decimal):
        raise Invalid(field, f"must be a JSON number, got {show(value)}")
    if value < 0:
        raise Invalid(field, f"must not be negative, got {show(value)}")
    if value >= MONEY_LIMIT:
        raise Invalid(field, f"must be below {MONEY_LIMIT} USD, got {show(value)}")
    raise Invalid(field, f"has more than {MONEY_DECIMALS} decimals, got {show(value)}")


def figure(value: Any, field: str, *, signed: bool = False) -> Decimal:
    """A live figure (a balance, a limit, today's usage) as a Decimal rounded to 9 decimals.

    Unlike :func:`money`, which guards the stored history, these are OpenRouter's running
    totals, computed in binary floating point: a 12th decimal is noise, not a broken answer.
    Numbers written as strings are accepted (analytics sends some metrics that way).
    """
    if type(value) is str:
        try:
            value = Decimal(value)
        except ArithmeticError:
            raise Invalid(field, f"must be a number, got {show(value)}") from None
    if type(value) not in (int, Decimal) or not Decimal(value).is_finite():
        raise Invalid(field, f"must be a JSON number, got {show(value)}")
    amount = Decimal(value)
    if not signed and amount < 0:
        raise Invalid(field, f"must not be negative, got {show(value)}")
    if abs(amount) >= MONEY_LIMIT:
        raise Invalid(field, f"must be below {MONEY_LIMIT} USD, got {show(value)}")
    return amount.quantize(NANO)


def optional_figure(value: Any, field: str, *, signed: bool = False) -> Decimal | None:
    return None if value is None else figure(value, field, signed=signed)


def count_text(value: Any, field: str) -> int:
    """A count that may arrive as a JSON integer or as a string of digits (analytics)."""
    if type(value) is str and value.isdigit():
        value = int(value)
    return count(value, field)


def boolean(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise Invalid(field, f"must be true or false, got {show(value)}")
    return value


def optional_string(value: Any, field: str) -> str | None:
    return None if value is None else string(value, field)


def timestamp(value: Any, field: str) -> dt.datetime | None:
    """An ISO-8601 timestamp (``Z`` or an offset; none means UTC) as aware UTC, or None."""
    if value is None:
        return None
    text = string(value, field)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(field, f"must be an ISO-8601 timestamp, got {show(value)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def optional_money(value: Any, field: str) -> Decimal | None:
    return None if value is None else money(value, field)


def signed_money(value: Any, field: str) -> Decimal | None:
    """A JSON number or null, sign allowed (``limit_remaining`` goes below zero on overspend)."""
    if value is None:
        return None
    if type(value) not in (int, Decimal):
        raise Invalid(field, f"must be a JSON number, got {show(value)}")
    return Decimal(value)


def string(value: Any, field: str) -> str:
    if type(value) is not str:
        raise Invalid(field, f"must be a string, got {show(value)}")
    return value


def data_object(body: Any, what: str) -> Mapping[str, Any]:
    """``body["data"]`` when it is an object, else InvalidResponseError."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise InvalidResponseError(
            f"invalid {what} response: expected an object with a 'data' object"
        )
    return data
