"""worker.sync.run's pure parts and the sums of /activity rows: daily totals, failure reasons,
the run summary."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from worker.commands.sync import format_summary
from worker.core.errors import (
    DecryptionError,
    InvalidResponseError,
    NotManagementKeyError,
    RateLimitedError,
)
from worker.core.outcomes import KeyOutcome, describe_failure
from worker.core.usage import UsageRow, WriteCounts
from worker.openrouter import ActivityRow, daily_totals
from worker.sync.summary import RunSummary

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


def test_daily_totals_sum_endpoints_exactly_and_keep_reasoning_apart() -> None:
    rows = [
        row(YESTERDAY, "m/a", "0.1", requests=1, prompt=10, completion=5, reasoning=9, endpoint=1),
        row(YESTERDAY, "m/a", "0.2", requests=2, prompt=20, completion=1, reasoning=0, endpoint=2),
        row(YESTERDAY, "m/b", "0.000000001"),
        row(YESTERDAY, "m/b", "0.000000001", endpoint=3),
    ]
    assert daily_totals(rows) == [
        UsageRow(YESTERDAY, "m/a", 3, 30, 6, 9, Decimal("0.3"), Decimal(0)),
        UsageRow(YESTERDAY, "m/b", 2, 0, 0, 0, Decimal("0.000000002"), Decimal(0)),
    ]


def test_daily_totals_refuse_counts_that_no_longer_fit_a_bigint() -> None:
    half = 2**62
    with pytest.raises(InvalidResponseError, match=r"more than 2\^63"):
        daily_totals(
            [row(YESTERDAY, "m/a", requests=half), row(YESTERDAY, "m/a", requests=half, endpoint=1)]
        )


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
        "stopped": None,
        "rows": {"inserted": 2, "updated": 1, "unchanged": 3, "deleted": 1, "kept": 0},
        "requests": 3,
        "account_keys": {
            "listed": 0,
            "fetched": 0,
            "unchanged": 0,
            "failed": 0,
            "linked": 0,
            "requests": 0,
            "rows": {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "kept": 0},
        },
        "history": {
            "accounts": 0,
            "keys": 0,
            "pending": 0,
            "unknown_keys": [],
            "requests": 0,
            "rate_limit_seconds": 0.0,
            "rows": {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "kept": 0},
        },
        "results": [
            {
                "api_key_id": 1,
                "user_id": 10,
                "name": "prod",
                "status": "ok",
                "rows": {"inserted": 2, "updated": 1, "unchanged": 3, "deleted": 1, "kept": 0},
                "requests": 2,
                "reason": None,
                "error": None,
            },
            {
                "api_key_id": 2,
                "user_id": 10,
                "name": "dev",
                "status": "failed",
                "rows": {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "kept": 0},
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


def test_summary_lists_the_account_keys_the_history_and_warnings() -> None:
    from worker.sync.summary import CatalogueTally, HistoryTally

    summary = RunSummary(
        run_id=8,
        trigger="sync",
        status="ok",
        days=[YESTERDAY],
        keys=[
            KeyOutcome(1, 10, "acme", "ok", WriteCounts(unchanged=4), 3),
            KeyOutcome(
                2, 10, "app", "warning", WriteCounts(), 1, "needs_management_key", "register it"
            ),
        ],
        catalogue=CatalogueTally(
            listed=1000,
            fetched=2,
            unchanged=998,
            linked=1,
            requests=2,
            counts=WriteCounts(inserted=5, updated=1),
        ),
        history=HistoryTally(
            accounts=1,
            keys=2,
            pending=1,
            requests=40,
            rate_limit_seconds=37.4,
            counts=WriteCounts(inserted=900),
        ),
    )
    assert (summary.keys_ok, summary.keys_failed, summary.requests) == (1, 0, 46)
    assert format_summary(summary)[3:] == [
        "requests: 46",
        "account keys: 1,000 listed, 2 fetched, 998 unchanged, 0 failed, 1 linked; "
        "rows: 5 inserted, 1 updated, 0 deleted",
        "history: 1 account(s) and 2 key(s) imported, 1 pending; rows: 900 inserted, "
        "0 updated, 0 deleted; 37 s waiting on OpenRouter's rate limit",
        "warning: key 2 ('app', user 10): needs_management_key: register it",
    ]


def test_the_summary_counts_with_thousands_separators() -> None:
    summary = RunSummary(
        run_id=1, trigger="sync", status="ok", days=[YESTERDAY - dt.timedelta(days=1), YESTERDAY]
    )
    summary.keys.append(
        KeyOutcome(
            1, 10, "prod", "ok", counts=WriteCounts(12_345, 1_000, 999_999, 0), http_requests=1_500
        )
    )
    summary.catalogue.listed = 1_200
    summary.catalogue.counts = WriteCounts(inserted=54_321)
    summary.history.keys = 1_200
    summary.history.requests = 2_000
    summary.history.rate_limit_seconds = 1_234.4
    summary.history.counts = WriteCounts(inserted=1_000_000)
    assert format_summary(summary)[1:] == [
        "keys: 1 ok, 0 failed",
        "rows: 12,345 inserted, 1,000 updated, 999,999 unchanged, 0 deleted",
        "requests: 3,500",
        "account keys: 1,200 listed, 0 fetched, 0 unchanged, 0 failed; "
        "rows: 54,321 inserted, 0 updated, 0 deleted",
        "history: 0 account(s) and 1,200 key(s) imported, 0 pending; rows: 1,000,000 inserted, "
        "0 updated, 0 deleted; 1,234 s waiting on OpenRouter's rate limit",
    ]
