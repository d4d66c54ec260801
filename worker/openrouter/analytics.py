"""``POST /analytics/query``: a year of per-day, per-model history, the account's or one key's.

``/activity`` covers 30 days; analytics answers up to 365, already summed per (day, model):
``request_count``, ``tokens_prompt``, ``tokens_completion``, ``reasoning_tokens``,
``total_usage`` (credits and BYOK inference together) and ``byok_usage``, so the cost is
``total_usage - byok_usage``. Counts may arrive as strings; amounts are OpenRouter's float sums,
rounded to 9 decimals. An answer holds at most :data:`MAX_ROWS` rows: one that says
``truncated`` must be asked again in smaller ranges, never stored as it is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from worker.core.errors import InvalidResponseError
from worker.core.usage import UsageRow
from worker.openrouter.activity import MAX_MODEL_LENGTH
from worker.openrouter.fields import Invalid, count_text, figure, parse_json, show, string

METRICS = (
    "request_count",
    "tokens_prompt",
    "tokens_completion",
    "reasoning_tokens",
    "total_usage",
    "byok_usage",
)
MAX_ROWS = 10_000


@dataclass(frozen=True)
class AnalyticsAnswer:
    """One validated analytics answer."""

    rows: list[UsageRow]  # one per (day, model), sorted
    truncated: bool  # OpenRouter cut the answer at its row limit: ask again in halves
    warnings: list[str]  # e.g. an api_key_id hash OpenRouter could not resolve
    requests: int = 1


def query_body(first: dt.date, last: dt.date, key_hash: str | None = None) -> dict[str, Any]:
    """The query for ``first`` … ``last`` (UTC days, both included), per day and model; the
    whole account, or one key by its hash (never by its name: names need not be unique)."""
    body: dict[str, Any] = {
        "metrics": list(METRICS),
        "dimensions": ["model"],
        "granularity": "day",
        "time_range": {
            "start": f"{first.isoformat()}T00:00:00Z",
            "end": f"{(last + dt.timedelta(days=1)).isoformat()}T00:00:00Z",
        },
        "limit": MAX_ROWS,
    }
    if key_hash is not None:
        body["filters"] = [{"field": "api_key_id", "operator": "eq", "value": key_hash}]
    return body


def _day(value: Any, first: dt.date, last: dt.date) -> dt.date:
    text = string(value, "date__day")
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("date__day", f"must be an ISO-8601 day, got {show(value)}") from None
    if moment.tzinfo is not None and moment.utcoffset() != dt.timedelta(0):
        raise Invalid("date__day", f"must be a UTC day, got {show(value)}")
    if moment.time() != dt.time(0):
        raise Invalid("date__day", f"must be the start of a UTC day, got {show(value)}")
    day = moment.date()
    if not first <= day <= last:
        raise Invalid("date__day", f"must lie in {first}..{last}, got {show(value)}")
    return day


def _row(item: Any, first: dt.date, last: dt.date) -> UsageRow:
    if not isinstance(item, dict):
        raise Invalid("(row)", f"must be an object, got {show(item)}")
    for field in ("date__day", "model", *METRICS):
        if field not in item:
            raise Invalid(field, "is missing")
    model = string(item["model"], "model")
    if not 0 < len(model) <= MAX_MODEL_LENGTH:
        raise Invalid("model", f"must be 1 to {MAX_MODEL_LENGTH} characters, got {len(model)}")
    total = figure(item["total_usage"] or 0, "total_usage")
    byok = figure(item["byok_usage"] or 0, "byok_usage")
    if byok > total:
        raise Invalid("byok_usage", f"is more than total_usage ({byok} > {total})")
    return UsageRow(
        _day(item["date__day"], first, last),
        model,
        count_text(item["request_count"] or 0, "request_count"),
        count_text(item["tokens_prompt"] or 0, "tokens_prompt"),
        count_text(item["tokens_completion"] or 0, "tokens_completion"),
        count_text(item["reasoning_tokens"] or 0, "reasoning_tokens"),
        total - byok,
        byok,
    )


def parse_analytics(text: str, first: dt.date, last: dt.date) -> AnalyticsAnswer:
    """Validate an analytics answer for ``first`` … ``last``; InvalidResponseError naming the
    row and field of the first problem."""
    prefix = "invalid /analytics/query response"
    body = parse_json(text, "/analytics/query")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise InvalidResponseError(f"{prefix}: expected an object with a 'data' object")
    rows_in, metadata = data.get("data"), data.get("metadata")
    if not isinstance(rows_in, list) or not isinstance(metadata, dict):
        raise InvalidResponseError(f"{prefix}: expected data.data (a list) and data.metadata")
    truncated = metadata.get("truncated")
    if type(truncated) is not bool:
        raise InvalidResponseError(f"{prefix}: metadata.truncated must be true or false")
    warnings = data.get("warnings") or []
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise InvalidResponseError(f"{prefix}: warnings must be a list of strings")
    rows: dict[tuple[dt.date, str], UsageRow] = {}
    for index, item in enumerate(rows_in):
        try:
            row = _row(item, first, last)
        except Invalid as exc:
            where = f"row {index}" if exc.field == "(row)" else f"row {index} field {exc.field!r}"
            raise InvalidResponseError(f"{prefix}: {where}: {exc.problem}") from None
        if (row.date, row.model) in rows:
            raise InvalidResponseError(
                f"{prefix}: row {index} repeats day {row.date} and model {row.model!r}"
            )
        rows[(row.date, row.model)] = row
    return AnalyticsAnswer(
        rows=[rows[pair] for pair in sorted(rows)], truncated=truncated, warnings=warnings
    )
