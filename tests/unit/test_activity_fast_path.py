"""The fast path of ``/activity`` validation accepts a subset of what the detailed checks accept,
returns the same rows, and really takes the common rows (otherwise it would only cost time)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from worker.openrouter import (
    MAX_MODEL_LENGTH,
    _activity_row,
    _fast_activity_row,
    _Invalid,
    completed_window,
)
from worker.testing.fake_openrouter import generate_activity

TODAY = dt.date(2026, 5, 1)
FIRST, LAST = completed_window(TODAY)
GOOD: dict[str, Any] = {
    "date": "2026-04-22",
    "model": "openai/gpt-4.1",
    "model_permaslug": "openai/gpt-4.1-2025-04-14",
    "endpoint_id": "ep-1",
    "provider_name": "OpenAI",
    "usage": Decimal("0.015"),
    "byok_usage_inference": 0,
    "requests": 5,
    "prompt_tokens": 50,
    "completion_tokens": 125,
    "reasoning_tokens": 25,
}


def _slow(item: Any, day: dt.date | None = None) -> Any:
    try:
        return _activity_row(item, FIRST, LAST, day)
    except _Invalid:
        return None


def test_generated_rows_all_take_the_fast_path_with_the_same_result() -> None:
    days: dict[str, dt.date] = {}
    for item in generate_activity(today=TODAY, days=30, models=7, endpoints=2, seed=3):
        fast = _fast_activity_row(item, days, FIRST, LAST, None)
        assert fast is not None
        assert fast == _slow(item)
        assert type(fast.usage) is Decimal and type(fast.byok_usage_inference) is Decimal


@pytest.mark.parametrize(
    "changes",
    [
        {"usage": Decimal("0.1500000000000")},  # trailing zeros beyond 9 decimals: accepted
        {"usage": Decimal("1E-9")},
        {"usage": Decimal("1E-10")},
        {"usage": Decimal("999999999.999999999")},
        {"usage": Decimal("1000000000")},
        {"usage": Decimal("-0.0")},
        {"usage": Decimal("-1")},
        {"usage": 10**9},
        {"usage": True},
        {"usage": 1.5},
        {"requests": True},
        {"requests": -1},
        {"requests": 1.0},
        {"model": ""},
        {"model": "m" * MAX_MODEL_LENGTH},
        {"model": "m" * (MAX_MODEL_LENGTH + 1)},
        {"model_permaslug": None},
        {"model_permaslug": 3},
        {"endpoint_id": None},
        {"provider_name": 1},
        {"date": "2026-04-22 00:00:00"},
        {"date": "2026-04-22T00:00:00+01:00"},
        {"date": "2026-02-30"},
        {"date": "2026-05-01"},
        {"date": ["2026-04-22"]},
        {"date": None},
    ],
)
def test_fast_path_never_accepts_more_than_the_detailed_checks(changes: dict[str, Any]) -> None:
    item = {**GOOD, **changes}
    fast = _fast_activity_row(item, {}, FIRST, LAST, None)
    slow = _slow(item)
    if fast is not None:
        assert fast == slow
    if slow is None:
        assert fast is None


def test_a_missing_field_or_a_non_object_falls_back() -> None:
    for field in GOOD:
        if field != "model_permaslug":
            item = {k: v for k, v in GOOD.items() if k != field}
            assert _fast_activity_row(item, {}, FIRST, LAST, None) is None
    assert _fast_activity_row([GOOD], {}, FIRST, LAST, None) is None


def test_the_date_cache_is_per_requested_day() -> None:
    days: dict[str, dt.date] = {}
    assert _fast_activity_row(GOOD, days, FIRST, LAST, dt.date(2026, 4, 22)) is not None
    assert days == {"2026-04-22": dt.date(2026, 4, 22)}
    assert _fast_activity_row(GOOD, {}, FIRST, LAST, dt.date(2026, 4, 23)) is None
