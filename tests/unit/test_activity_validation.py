"""``/activity`` validation: every contract violation names its row and field; nothing coerced."""

from __future__ import annotations

import datetime as dt
import functools
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from worker.config import OpenRouterSettings
from worker.core.errors import InvalidResponseError
from worker.openrouter import MAX_MODEL_LENGTH, OpenRouterClient, daily_totals, parse_activity
from worker.testing.activity_data import as_stored, dumps, expected_totals, generate_activity
from worker.testing.clock import noon

WINDOW = (dt.date(2026, 4, 1), dt.date(2026, 4, 30))


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "date": "2026-04-22",
        "model": "openai/gpt-4.1",
        "model_permaslug": "openai/gpt-4.1-2025-04-14",
        "endpoint_id": "ep-1",
        "provider_name": "OpenAI",
        "usage": 0.015,
        "byok_usage_inference": 0.012,
        "requests": 5,
        "prompt_tokens": 50,
        "completion_tokens": 125,
        "reasoning_tokens": 25,
    }
    row.update(changes)
    return row


def _text(*rows: dict[str, Any]) -> str:
    return json.dumps({"data": list(rows)})


def _without(field: str) -> dict[str, Any]:
    row = _row()
    del row[field]
    return row


def _parse(*rows: dict[str, Any], day: dt.date | None = None) -> list[Any]:
    return parse_activity(_text(*rows), window=WINDOW, day=day)


@pytest.mark.parametrize(
    "field",
    [
        "date",
        "model",
        "endpoint_id",
        "provider_name",
        "usage",
        "byok_usage_inference",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
    ],
)
def test_missing_required_field(field: str) -> None:
    with pytest.raises(InvalidResponseError) as caught:
        _parse(_row(), _without(field))
    assert str(caught.value) == f"invalid /activity response: row 1 field {field!r}: is missing"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("prompt_tokens", -1, "must be a non-negative integer, got -1"),
        ("requests", True, "must be a non-negative integer, got true"),
        ("completion_tokens", 1.5, "must be a non-negative integer, got 1.5"),
        ("reasoning_tokens", "3", 'must be a non-negative integer, got "3"'),
        ("requests", None, "must be a non-negative integer, got null"),
        ("usage", "0.5", 'must be a JSON number, got "0.5"'),
        ("usage", False, "must be a JSON number, got false"),
        ("usage", None, "must be a JSON number, got null"),
        ("byok_usage_inference", "free", 'must be a JSON number, got "free"'),
        ("usage", -0.01, "must not be negative, got -0.01"),
        ("usage", 1e9, "must be below 1000000000 USD"),
        ("usage", 0.0000000001, "has more than 9 decimals"),
        ("model", 42, "must be a string, got 42"),
        ("model", "", "must not be empty"),
        (
            "model",
            "x" * (MAX_MODEL_LENGTH + 1),
            f"must be at most {MAX_MODEL_LENGTH} characters, got {MAX_MODEL_LENGTH + 1}",
        ),
        ("model_permaslug", 7, "must be a string, got 7"),
        ("endpoint_id", None, "must be a string, got null"),
        ("provider_name", ["OpenAI"], "must be a string"),
        ("date", "22/04/2026", 'must be a YYYY-MM-DD date, got "22/04/2026"'),
        ("date", "2026-04-31", "is not a calendar date"),
        ("date", 20260422, "must be a YYYY-MM-DD date"),
        ("date", "2026-04-22 00:00:00+02:00", "must be a YYYY-MM-DD date"),
        ("date", "2026-03-31", "must lie in the window 2026-04-01..2026-04-30"),
        ("date", "2026-05-01", "must lie in the window"),
        ("date", "2026-06-01", "must lie in the window"),
    ],
)
def test_bad_field_names_row_and_field(field: str, value: Any, problem: str) -> None:
    with pytest.raises(InvalidResponseError) as caught:
        _parse(
            _row(),
            _row(endpoint_id="ep-2"),
            _row(endpoint_id="ep-3"),
            _row(
                **{field: value, "endpoint_id": "ep-4"}
                if field != "endpoint_id"
                else {field: value}
            ),
        )
    message = str(caught.value)
    assert message.startswith(f"invalid /activity response: row 3 field {field!r}: ")
    assert problem in message


def test_the_example_message() -> None:
    with pytest.raises(InvalidResponseError) as caught:
        _parse(_row(), _row(), _row(), _row(endpoint_id="e", prompt_tokens=-1))
    assert str(caught.value) == (
        "invalid /activity response: row 3 field 'prompt_tokens': "
        "must be a non-negative integer, got -1"
    )


def test_row_must_be_an_object() -> None:
    with pytest.raises(InvalidResponseError, match=r"row 1: must be an object, got \[1, 2\]"):
        _parse(_row(), [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ['{"data": {}}', "[]", '{"rows": []}', "null"])
def test_body_without_a_data_list(text: str) -> None:
    with pytest.raises(InvalidResponseError, match="expected an object with a 'data' list"):
        parse_activity(text, window=WINDOW)


@pytest.mark.parametrize("text", ["", "not json", '{"data": [', '{"data": [{"usage": NaN}]}'])
def test_body_not_json(text: str) -> None:
    with pytest.raises(InvalidResponseError, match="body is not JSON"):
        parse_activity(text, window=WINDOW)


def test_row_of_another_day_than_requested() -> None:
    with pytest.raises(
        InvalidResponseError, match="row 0 field 'date': must be the requested day 2026-04-21"
    ):
        _parse(_row(), day=dt.date(2026, 4, 21))


def test_window_edges_are_accepted() -> None:
    rows = _parse(_row(date="2026-04-01"), _row(date="2026-04-30"))
    assert [r.date for r in rows] == [dt.date(2026, 4, 1), dt.date(2026, 4, 30)]


@pytest.mark.parametrize(
    "spelling",
    ["2026-04-22", "2026-04-22 00:00:00", "2026-04-22T00:00:00Z", "2026-04-22T00:00:00.000+00:00"],
)
def test_date_spellings(spelling: str) -> None:
    (row,) = _parse(_row(date=spelling))
    assert row.date == dt.date(2026, 4, 22)


def test_reasoning_above_completion_is_valid_and_kept() -> None:
    (row,) = _parse(_row(completion_tokens=10, reasoning_tokens=900))
    assert (row.completion_tokens, row.reasoning_tokens) == (10, 900)


def test_model_of_exactly_the_column_length_is_valid() -> None:
    (row,) = _parse(_row(model="m" * MAX_MODEL_LENGTH))
    assert len(row.model) == MAX_MODEL_LENGTH


def test_model_permaslug_may_be_absent() -> None:
    assert len(_parse(_without("model_permaslug"))) == 1


def test_money_is_exact_decimal_from_the_text() -> None:
    text = (
        _text(_row())
        .replace('"usage": 0.015', '"usage": 454.542594979')
        .replace('"byok_usage_inference": 0.012', '"byok_usage_inference": 1E-9')
    )
    (row,) = parse_activity(text, window=WINDOW)
    assert row.usage == Decimal("454.542594979")
    assert str(row.usage) == "454.542594979"
    assert row.byok_usage_inference == Decimal("0.000000001")


def test_integer_money_becomes_decimal() -> None:
    (row,) = _parse(_row(usage=3, byok_usage_inference=0))
    assert row.usage == Decimal(3)
    assert isinstance(row.usage, Decimal)
    assert isinstance(row.byok_usage_inference, Decimal)


def test_trailing_zeros_beyond_nine_decimals_are_fine() -> None:
    text = _text(_row()).replace('"usage": 0.015', '"usage": 0.1500000000000')
    (row,) = parse_activity(text, window=WINDOW)
    assert row.usage == Decimal("0.15")


def test_exact_duplicates_count_once() -> None:
    rows = _parse(_row(), _row(endpoint_id="ep-2"), _row(), _row(date="2026-04-22 00:00:00"))
    assert [r.endpoint_id for r in rows] == ["ep-1", "ep-2"]


def test_conflicting_rows_for_one_endpoint_are_invalid() -> None:
    with pytest.raises(InvalidResponseError) as caught:
        _parse(_row(), _row(endpoint_id="ep-2"), _row(usage=0.016))
    assert str(caught.value) == (
        "invalid /activity response: row 2 repeats date 2026-04-22, model 'openai/gpt-4.1', "
        "endpoint 'ep-1' of row 0 with different values"
    )


def test_same_model_other_endpoint_or_day_is_not_a_conflict() -> None:
    rows = _parse(_row(), _row(endpoint_id="ep-2", usage=1), _row(date="2026-04-23", usage=2))
    assert len(rows) == 3


def test_secret_in_a_bad_value_is_masked() -> None:
    with pytest.raises(InvalidResponseError) as caught:
        _parse(_row(model=["sk-or-v1-deadbeef"]))
    assert "sk-or-v1-deadbeef" not in str(caught.value)


def test_client_rejects_an_invalid_row_without_retrying() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, text=_text(_row(), _row(endpoint_id="x", requests=-3)))

    settings = OpenRouterSettings(base_url="https://openrouter.test/api/v1")
    with (
        OpenRouterClient(
            settings,
            transport=httpx.MockTransport(handler),
            sleep=lambda _s: None,
            wall_clock=functools.partial(noon, dt.date(2026, 5, 1)),
        ) as client,
        pytest.raises(InvalidResponseError, match="row 1 field 'requests'"),
    ):
        client.get_activity("sk-or-v1-k")
    assert len(calls) == 1


def test_realistic_answers_parse_to_the_expected_daily_totals() -> None:
    raw = generate_activity(today=dt.date(2026, 5, 1), days=30, models=7, endpoints=2, seed=3)
    rows = parse_activity(dumps({"data": raw}), window=WINDOW)
    assert len(rows) == len(raw)
    assert all(type(r.usage) is Decimal and type(r.byok_usage_inference) is Decimal for r in rows)
    totals = {
        (t.date, t.model): (
            t.requests_count,
            t.tokens_input,
            t.tokens_output,
            t.tokens_reasoning,
            t.cost,
            t.byok_cost,
        )
        for t in daily_totals(rows)
    }
    assert totals == as_stored(expected_totals(raw))


def test_a_count_beyond_a_bigint_is_an_invalid_answer_not_a_crash() -> None:
    with pytest.raises(InvalidResponseError, match=r"row 0 field 'requests': must be below 2\^63"):
        _parse(_row(requests=2**63))


def test_json_nested_too_deeply_is_an_invalid_answer_not_a_crash() -> None:
    with pytest.raises(InvalidResponseError, match="nested too deeply"):
        parse_activity("[" * 100_000 + "]" * 100_000, window=WINDOW)
