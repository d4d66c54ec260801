"""worker.sync's pure parts: which days, how rows are summed, how failures are described."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from worker.commands.sync import format_summary
from worker.errors import (
    DecryptionError,
    InvalidResponseError,
    NotManagementKeyError,
    RateLimitedError,
    UsageError,
)
from worker.openrouter import ActivityRow
from worker.store import UsageRow, WriteCounts
from worker.sync import (
    KeyOutcome,
    RunSummary,
    aggregate,
    backfill_days,
    check_days,
    describe_failure,
    window_days,
)

TODAY = dt.date(2026, 3, 1)
YESTERDAY = dt.date(2026, 2, 28)


def row(
    day: dt.date,
    model: str,
    usage: str = "0",
    *,
    endpoint: int = 0,
    requests: int = 1,
    prompt: int = 0,
    completion: int = 0,
    reasoning: int = 0,
    byok: str = "0",
) -> ActivityRow:
    return ActivityRow(
        date=day,
        model=model,
        endpoint_id=f"e{endpoint}",
        provider_name="P",
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        usage=Decimal(usage),
        byok_usage_inference=Decimal(byok),
    )


def test_the_window_is_the_30_completed_days_before_today() -> None:
    days = window_days(TODAY)
    assert (len(days), days[0], days[-1]) == (30, dt.date(2026, 1, 30), YESTERDAY)


def test_backfill_days_counts_back_from_yesterday() -> None:
    assert backfill_days(TODAY, days=3) == [dt.date(2026, 2, 26), dt.date(2026, 2, 27), YESTERDAY]
    assert len(backfill_days(TODAY, days=30)) == 30


def test_backfill_since_defaults_until_to_yesterday() -> None:
    assert backfill_days(TODAY, since=dt.date(2026, 2, 27)) == [dt.date(2026, 2, 27), YESTERDAY]
    assert backfill_days(TODAY, since=dt.date(2026, 2, 1), until=dt.date(2026, 2, 2)) == [
        dt.date(2026, 2, 1),
        dt.date(2026, 2, 2),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": 0}, "between 1 and 30"),
        ({"days": 31}, "between 1 and 30"),
        ({}, "either --days"),
        ({"days": 2, "since": YESTERDAY}, "either --days"),
        ({"days": 2, "until": YESTERDAY}, "--until goes with --since"),
        ({"since": YESTERDAY, "until": dt.date(2026, 2, 1)}, "is before --since"),
        ({"since": dt.date(2026, 1, 29)}, "older than OpenRouter's window"),
        ({"since": YESTERDAY, "until": TODAY}, "not a completed UTC day"),
        ({"since": dt.date(2026, 3, 5)}, "is before --since"),
    ],
)
def test_backfill_days_refuses_what_openrouter_cannot_answer(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        backfill_days(TODAY, **kwargs)
    assert info.value.exit_code == 2


def test_check_days_sorts_and_deduplicates_and_refuses_nothing() -> None:
    assert check_days([YESTERDAY, dt.date(2026, 2, 1), YESTERDAY], TODAY) == [
        dt.date(2026, 2, 1),
        YESTERDAY,
    ]
    with pytest.raises(UsageError, match="no days"):
        check_days([], TODAY)
    with pytest.raises(UsageError, match="not a completed UTC day"):
        check_days([TODAY + dt.timedelta(days=3)], TODAY)


def test_aggregate_sums_endpoints_exactly_and_keeps_reasoning_apart() -> None:
    rows = [
        row(YESTERDAY, "m/a", "0.1", requests=1, prompt=10, completion=5, reasoning=9, endpoint=1),
        row(YESTERDAY, "m/a", "0.2", requests=2, prompt=20, completion=1, reasoning=0, endpoint=2),
        row(YESTERDAY, "m/b", "0.000000001"),
        row(YESTERDAY, "m/b", "0.000000001", endpoint=3),
    ]
    assert aggregate(rows, [YESTERDAY]) == [
        UsageRow(YESTERDAY, "m/a", 3, 30, 6, 9, Decimal("0.3"), Decimal(0)),
        UsageRow(YESTERDAY, "m/b", 2, 0, 0, 0, Decimal("0.000000002"), Decimal(0)),
    ]


def test_aggregate_rejects_a_row_for_a_day_not_requested() -> None:
    with pytest.raises(InvalidResponseError, match="not requested"):
        aggregate([row(dt.date(2026, 2, 1), "m/a")], [YESTERDAY])


@pytest.mark.parametrize(
    ("error", "reason", "fragment"),
    [
        (
            NotManagementKeyError("OpenRouter said 403"),
            "not_management_key",
            "needs a management key",
        ),
        (DecryptionError("cannot decrypt api key 4"), "decrypt_failed", "api key 4"),
        (RateLimitedError(), "rate_limited", "429"),
        (
            RuntimeError("boom sk-or-v1-abcdef\nsecond line"),
            "unexpected",
            "unexpected RuntimeError: boom [REDACTED]",
        ),
    ],
)
def test_failures_are_described_by_a_stable_reason_and_one_masked_line(
    error: BaseException, reason: str, fragment: str
) -> None:
    got_reason, message = describe_failure(error)
    assert got_reason == reason
    assert fragment in message
    assert "\n" not in message and "sk-or-v1" not in message


def test_summary_json_and_text_are_stable() -> None:
    summary = RunSummary(
        run_id=7,
        trigger="backfill",
        status="failed",
        days=[dt.date(2026, 2, 27), YESTERDAY],
        keys=[
            KeyOutcome(1, 10, "prod", "ok", WriteCounts(2, 1, 3, 1), 2),
            KeyOutcome(
                2,
                10,
                "dev",
                "failed",
                WriteCounts(),
                1,
                "not_management_key",
                "403: per-model history needs a management key",
            ),
        ],
    )
    assert summary.as_dict() == {
        "run_id": 7,
        "trigger": "backfill",
        "status": "failed",
        "days": {"first": "2026-02-27", "last": "2026-02-28", "count": 2},
        "keys_ok": 1,
        "keys_failed": 1,
        "keys_skipped": 0,
        "rows": {"inserted": 2, "updated": 1, "unchanged": 3, "deleted": 1},
        "requests": 3,
        "results": [
            {
                "api_key_id": 1,
                "user_id": 10,
                "name": "prod",
                "status": "ok",
                "rows": {"inserted": 2, "updated": 1, "unchanged": 3, "deleted": 1},
                "requests": 2,
                "reason": None,
                "error": None,
            },
            {
                "api_key_id": 2,
                "user_id": 10,
                "name": "dev",
                "status": "failed",
                "rows": {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0},
                "requests": 1,
                "reason": "not_management_key",
                "error": "403: per-model history needs a management key",
            },
        ],
    }
    assert format_summary(summary) == [
        "backfill run 7 (2026-02-27 … 2026-02-28, 2 days): failed",
        "keys: 1 ok, 1 failed",
        "rows: 2 inserted, 1 updated, 3 unchanged, 1 deleted",
        "requests: 3",
        "failed: key 2 ('dev', user 10): not_management_key: "
        "403: per-model history needs a management key",
    ]
