"""``GET /activity``: its rows, the one validator, and their daily totals per model.

OpenRouter answers one row per (UTC day, model, provider endpoint); a day and model can
therefore appear on several rows, which :func:`daily_totals` sums exactly. :func:`parse_activity`
is the only place that decides whether an answer is valid: a row that breaks the contract
rejects the whole answer with an error naming the row index and field. Nothing is coerced.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NamedTuple

from worker.core.errors import InvalidResponseError
from worker.core.usage import UsageRow
from worker.openrouter.fields import COUNT_LIMIT, Invalid, count, money, parse_json, show, string

MAX_MODEL_LENGTH = 100  # usage_stats.model column

# "2026-04-22" or "2026-04-22 00:00:00" (also ISO 'T', fractions, Z/+00:00): the day is the
# first ten characters. A non-UTC offset would move the day, so it is not accepted.
_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]00:?00)?)?")
_REQUIRED = (
    "date",
    "model",
    "endpoint_id",
    "provider_name",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "usage",
    "byok_usage_inference",
)


class ActivityRow(NamedTuple):
    """One validated ``/activity`` item: one (date, model, endpoint) with its counts and cost.

    A NamedTuple (built at C speed): a large account answers tens of thousands of rows.
    """

    date: dt.date
    model: str
    endpoint_id: str
    provider_name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    usage: Decimal
    byok_usage_inference: Decimal


def _day(value: Any, first: dt.date, last: dt.date, day: dt.date | None) -> dt.date:
    match = _DATE_RE.fullmatch(value) if type(value) is str else None
    if match is None:
        raise Invalid("date", f"must be a YYYY-MM-DD date, got {show(value)}")
    try:
        date = dt.date.fromisoformat(match.group(1))
    except ValueError:
        raise Invalid("date", f"is not a calendar date, got {show(value)}") from None
    if day is not None and date != day:
        raise Invalid("date", f"must be the requested day {day}, got {show(value)}")
    if not first <= date <= last:
        raise Invalid("date", f"must lie in the window {first}..{last}, got {show(value)}")
    return date


def _row(
    item: Any, days: dict[str, dt.date], first: dt.date, last: dt.date, day: dt.date | None
) -> ActivityRow:
    """Validate one raw ``ActivityItem``; raise :class:`Invalid` naming the field.

    Straight-line checks that cost next to nothing when they pass (this runs once per row of
    every answer). ``days`` caches the date spellings already validated in this answer: a
    30-day answer repeats a few dozen of them over thousands of rows.
    """
    if type(item) is not dict:
        raise Invalid("(row)", f"must be an object, got {show(item)}")
    try:
        raw_date = item["date"]
        model = item["model"]
        endpoint_id = item["endpoint_id"]
        provider_name = item["provider_name"]
        requests = item["requests"]
        prompt = item["prompt_tokens"]
        completion = item["completion_tokens"]
        reasoning = item["reasoning_tokens"]
        usage = item["usage"]
        byok = item["byok_usage_inference"]
    except KeyError:
        missing = next(name for name in _REQUIRED if name not in item)
        raise Invalid(missing, "is missing") from None
    date = days.get(raw_date) if type(raw_date) is str else None
    if date is None:
        date = days[raw_date] = _day(raw_date, first, last, day)
    if type(model) is not str or not 0 < len(model) <= MAX_MODEL_LENGTH:
        string(model, "model")
        if not model:
            raise Invalid("model", "must not be empty")
        raise Invalid("model", f"must be at most {MAX_MODEL_LENGTH} characters, got {len(model)}")
    # model_permaslug is required by the contract but unused here: its type is checked if sent.
    permaslug = item.get("model_permaslug")
    if permaslug is not None and type(permaslug) is not str:
        string(permaslug, "model_permaslug")
    if type(endpoint_id) is not str:
        string(endpoint_id, "endpoint_id")
    if type(provider_name) is not str:
        string(provider_name, "provider_name")
    for name, value in (
        ("requests", requests),
        ("prompt_tokens", prompt),
        ("completion_tokens", completion),
        ("reasoning_tokens", reasoning),
    ):
        if type(value) is not int or not 0 <= value < COUNT_LIMIT:
            count(value, name)
    return ActivityRow(
        date,
        model,
        endpoint_id,
        provider_name,
        requests,
        prompt,
        completion,
        reasoning,
        money(usage, "usage"),
        money(byok, "byok_usage_inference"),
    )


def parse_activity(
    text: str, *, window: tuple[dt.date, dt.date], day: dt.date | None = None
) -> list[ActivityRow]:
    """Validate an ``/activity`` body; return its rows, exact duplicates counted once.

    Every row must lie in ``window`` (inclusive first and last day) and, when ``day`` was
    requested, on that day. Raises :class:`InvalidResponseError` naming the row index and field
    of the first problem. Two *different* rows for one (date, model, endpoint_id) make the
    answer invalid: summing or picking one would both be guesses.
    """
    prefix = "invalid /activity response"
    body = parse_json(text, "/activity")
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise InvalidResponseError(f"{prefix}: expected an object with a 'data' list")
    first, last = window
    rows: list[ActivityRow] = []
    seen: dict[tuple[dt.date, str, str], tuple[int, ActivityRow]] = {}
    days: dict[str, dt.date] = {}
    for index, item in enumerate(body["data"]):
        try:
            row = _row(item, days, first, last, day)
        except Invalid as exc:
            where = f"row {index}" if exc.field == "(row)" else f"row {index} field {exc.field!r}"
            raise InvalidResponseError(f"{prefix}: {where}: {exc.problem}") from None
        key = (row.date, row.model, row.endpoint_id)
        other = seen.get(key)
        if other is not None:
            if other[1] == row:
                continue  # an exact duplicate is the same fact reported twice
            raise InvalidResponseError(
                f"{prefix}: row {index} repeats date {row.date}, model {row.model!r}, "
                f"endpoint {row.endpoint_id!r} of row {other[0]} with different values"
            )
        seen[key] = (index, row)
        rows.append(row)
    return rows


def daily_totals(rows: Iterable[ActivityRow]) -> list[UsageRow]:
    """Sum endpoint rows per (date, model), exactly, sorted by date then model.

    ``requests`` → requests_count, ``prompt_tokens`` → tokens_input, ``completion_tokens`` →
    tokens_output, ``reasoning_tokens`` → tokens_reasoning (already part of the completion
    tokens, so never added to them), ``usage`` → cost, ``byok_usage_inference`` → byok_cost.
    """
    totals: dict[tuple[dt.date, str], list[Any]] = {}
    for row in rows:
        acc = totals.get((row.date, row.model))
        if acc is None:
            # The first endpoint's values start the totals: with one endpoint per model, the
            # common case, nothing is added at all.
            totals[(row.date, row.model)] = list(row[4:])
            continue
        acc[0] += row.requests
        acc[1] += row.prompt_tokens
        acc[2] += row.completion_tokens
        acc[3] += row.reasoning_tokens
        acc[4] += row.usage
        acc[5] += row.byok_usage_inference
    result = [UsageRow(date, model, *acc) for (date, model), acc in sorted(totals.items())]
    for total in result:
        if max(total[2:6]) >= COUNT_LIMIT:
            raise InvalidResponseError(
                f"invalid /activity response: the counts of {total.model!r} on {total.date} "
                "add up to more than 2^63"
            )
    return result
