"""/metrics and /healthz over real HTTP on SQLite and PostgreSQL, from a seeded database and
ledger; the health rules and the failed-token limiter on their own."""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from worker.alerts.deliver import DeliveryCounts
from worker.alerts.fired import Fired
from worker.config import Settings
from worker.core.days import month_so_far
from worker.core.outcomes import KeyOutcome
from worker.core.usage import WriteCounts
from worker.daemon import metrics
from worker.daemon.http.context import HttpContext
from worker.daemon.http.health import key_problems
from worker.daemon.http.limiter import FailedAuthLimiter
from worker.daemon.http.svg import nice_scale
from worker.live.poll import PollSummary, SourceOutcome
from worker.reports.status import KeyStatus
from worker.store.db import create_db_engine, make_session_factory
from worker.store.models import ApiKey, SyncKeyResult, SyncRun
from worker.sync.summary import RunSummary
from worker.testing import loopback
from worker.testing.clock import noon
from worker.testing.served import serving

if TYPE_CHECKING:
    from tests.conftest import ReportData

NOW = noon(dt.date(2026, 11, 6))  # month so far: 2026-11-01 … 11-05
HOUR = dt.timedelta(hours=1)
ONE = Decimal(1)


def add_run(engine: Engine, finished: dt.datetime, results: dict[int, str]) -> None:
    """One ledger run finished at ``finished`` with each key's status."""
    with Session(engine) as session, session.begin():
        run = SyncRun(
            trigger="schedule",
            status="failed" if "failed" in results.values() else "ok",
            started_at=finished - dt.timedelta(seconds=5),
            finished_at=finished,
            keys_ok=list(results.values()).count("ok"),
            keys_failed=list(results.values()).count("failed"),
        )
        session.add(run)
        session.flush()
        for key_id, status in results.items():
            session.add(
                SyncKeyResult(
                    run_id=run.id,
                    api_key_id=key_id,
                    status=status,
                    error="OpenRouter kept failing" if status == "failed" else None,
                    finished_at=finished,
                )
            )


@pytest.fixture
def seeded(engine: Engine, report_data: ReportData) -> dict[str, int]:
    """The report rows and two runs, on SQLite and on PostgreSQL."""
    return seed(engine, report_data)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_db_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def seeded_sqlite(sqlite_engine: Engine, report_data: ReportData) -> dict[str, int]:
    """The same on SQLite only, for what does not depend on the database."""
    return seed(sqlite_engine, report_data)


def seed(engine: Engine, report_data: ReportData) -> dict[str, int]:
    keys = report_data(engine)
    with Session(engine) as session, session.begin():
        for key in session.query(ApiKey):  # created "now" by the database: make them old
            key.created_at = NOW - 30 * 24 * HOUR
    production, staging, research = keys["production"], keys["staging"], keys["research"]
    add_run(engine, NOW - 30 * HOUR, {production: "ok", staging: "ok", research: "ok"})
    add_run(engine, NOW - 2 * HOUR, {production: "ok", staging: "failed"})
    return keys


def serve(engine: Engine, alive: bool = True) -> Iterator[str]:
    ctx = HttpContext(
        settings=Settings(),
        session_factory=make_session_factory(engine),
        scheduler_alive=lambda: alive,
        next_run_at=lambda: NOW + 12 * HOUR,
        clock=lambda: NOW,
    )
    return serving(ctx)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_read_spend_and_sync_times_per_account_from_the_database(
    engine: Engine, seeded: dict[str, int]
) -> None:
    with serve(engine) as url:
        response = loopback.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(response.text)

    def account(name: str) -> tuple[tuple[str, str], ...]:
        return (("account", name), ("account_id", str(seeded[name])), ("kind", "unknown"))

    mtd = "openrouter_watcher_account_spend_month_to_date_usd"
    # November 1…5 from the seeded rows (the 2026-10-31 and 2026-11-06 rows are outside)
    assert got[(mtd, account("production"))] == float(Decimal("1234.867891234"))
    assert got[(mtd, account("staging"))] == float(Decimal("0.000000500"))
    assert got[(mtd, account("research"))] == float(Decimal("1.038338331"))
    success = "openrouter_watcher_account_last_success_timestamp_seconds"
    assert got[(success, account("production"))] == (NOW - 2 * HOUR).timestamp()
    assert got[(success, account("staging"))] == (NOW - 30 * HOUR).timestamp()
    failed = "openrouter_watcher_account_last_sync_failed"
    assert [got[(failed, account(n))] for n in ("production", "staging", "research")] == [0, 1, 0]
    assert got[("openrouter_watcher_database_up", ())] == 1
    assert got[("openrouter_watcher_scheduler_running", ())] == 1
    assert (
        got[("openrouter_watcher_next_sync_timestamp_seconds", ())] == (NOW + 12 * HOUR).timestamp()
    )
    # bounded labels only: never a user, a date or a model
    for name, labels in got:
        assert {key for key, _ in labels} <= {
            "account",
            "account_id",
            "kind",
            "trigger",
            "status",
            "result",
            "operation",
            "endpoint",
            "outcome",
            "reason",
            "rule",
            "channel",
            "key",
            "key_hash",
            "le",
        }, name
    assert "alice@example.com" not in response.text and "2026-11" not in response.text


def test_live_counters_count_the_daemons_syncs() -> None:
    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        value("openrouter_watcher_key_syncs_total", result="rate_limited"),
        value("openrouter_watcher_rows_written_total", operation="inserted"),
        value("openrouter_watcher_sync_runs_total", status="skipped"),
        value("openrouter_watcher_sync_duration_seconds_count", trigger="schedule"),
    )
    summary = RunSummary(
        run_id=1,
        trigger="schedule",
        status="failed",
        days=[],
        keys=[
            KeyOutcome(1, 1, "a", "ok", WriteCounts(inserted=30, unchanged=2)),
            KeyOutcome(2, 1, "b", "failed", reason="rate_limited", error="…"),
        ],
    )
    metrics.record_sync("schedule", summary, 1.5)
    metrics.record_sync("schedule", None, 0.0)
    metrics.record_openrouter_request("/activity", 503)
    metrics.record_openrouter_retry("/activity", None)
    after = (
        value("openrouter_watcher_key_syncs_total", result="rate_limited"),
        value("openrouter_watcher_rows_written_total", operation="inserted"),
        value("openrouter_watcher_sync_runs_total", status="skipped"),
        value("openrouter_watcher_sync_duration_seconds_count", trigger="schedule"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 30, 1, 1]
    assert (
        value("openrouter_watcher_openrouter_requests_total", endpoint="/activity", outcome="5xx")
        >= 1
    )
    assert (
        value("openrouter_watcher_openrouter_retries_total", endpoint="/activity", reason="error")
        >= 1
    )


def test_live_counters_count_the_daemons_polls_alerts_and_failed_deliveries() -> None:
    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    def snapshot() -> list[float]:
        return [
            value("openrouter_watcher_poll_runs_total", status="failed"),
            value("openrouter_watcher_poll_runs_total", status="skipped"),
            value("openrouter_watcher_poll_runs_total", status="error"),
            value("openrouter_watcher_poll_duration_seconds_count"),
            value("openrouter_watcher_alerts_fired_total", rule="daily-spend"),
            value("openrouter_watcher_alert_deliveries_failed_total", channel="ops"),
        ]

    before = snapshot()
    fired = Fired(1, "daily-spend", "spend_today", "key:1:ab", "key", ONE, ONE, "2026-11-06", "t")
    summary = PollSummary(
        started_at=NOW,
        sources=[SourceOutcome(1, "acct", "account"), SourceOutcome(2, "k", "key", "failed")],
        fired=[fired, fired],
        delivery=DeliveryCounts(failed=2, failed_channels=collections.Counter(ops=2)),
    )
    metrics.record_poll(summary, 0.8)
    metrics.record_poll(None, 0.0)
    metrics.record_poll_error(0.1)
    after = snapshot()
    assert summary.status == "failed"
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 2, 2, 2]


def test_healthz_is_503_with_reasons_naming_keys_by_id_only(
    sqlite_engine: Engine, seeded_sqlite: dict[str, int]
) -> None:
    engine, seeded = sqlite_engine, seeded_sqlite
    with serve(engine, alive=False) as url:
        response = loopback.get(f"{url}/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy" and body["scheduler"] == "stopped"
    assert body["active_keys"] == 3
    staging, research = seeded["staging"], seeded["research"]
    assert body["reasons"] == [
        "the scheduler is not running",
        f"key {staging}: its last sync failed at {(NOW - 2 * HOUR):%Y-%m-%dT%H:%M:%SZ}",
        f"key {research}: last successful sync 30.0 h ago (limit 26.0 h)",
    ]
    for private in ("alice", "bob", "staging", "research", "OpenRouter kept failing"):
        assert private not in response.text


def test_healthz_is_200_when_every_active_key_synced_recently(
    sqlite_engine: Engine, seeded_sqlite: dict[str, int]
) -> None:
    engine, seeded = sqlite_engine, seeded_sqlite
    add_run(engine, NOW - HOUR, dict.fromkeys(seeded.values(), "ok"))
    with serve(engine) as url:
        response = loopback.get(f"{url}/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "scheduler": "running",
        "active_keys": 3,
        "healthy_within_hours": 26.0,
        "checked_at": "2026-11-06T12:00:00Z",
        "reasons": [],
    }


def key(key_id: int, *, active: bool = True, status: str | None, ok_ago: float | None) -> KeyStatus:
    success = NOW - ok_ago * HOUR if ok_ago is not None else None
    return KeyStatus(
        key_id,
        "u@example.com",
        f"k{key_id}",
        "management",
        active,
        success,
        status,
        None,
        success,
        0,
        None,
    )


def test_health_rules_for_new_disabled_stale_and_failed_keys() -> None:
    keys = [
        key(1, status="ok", ok_ago=25.9),
        key(2, status=None, ok_ago=None),  # added 1 h ago: waiting for its first sync
        key(3, status=None, ok_ago=None),  # added 2 days ago and never synced
        key(4, active=False, status="failed", ok_ago=100),  # disabled: not watched
        key(5, status="ok", ok_ago=26.1),
    ]
    added = {2: NOW - HOUR, 3: NOW - 48 * HOUR}
    assert key_problems(keys, added, now=NOW, within=26 * HOUR) == [
        "key 3: never synced successfully",
        "key 5: last successful sync 26.1 h ago (limit 26.0 h)",
    ]


def test_failed_token_limiter_forgets_after_a_minute_and_bounds_its_memory() -> None:
    now = [1000.0]
    limiter = FailedAuthLimiter(2, clock=lambda: now[0])
    limiter.failed("a")
    assert limiter.retry_after("a") == 0
    now[0] += 10
    limiter.failed("a")
    assert limiter.retry_after("a") == 50  # the first failure expires 60 s after it
    assert limiter.retry_after("b") == 0
    now[0] += 50
    assert limiter.retry_after("a") == 0
    for n in range(10_050):
        limiter.failed(f"client-{n}")
    assert len(limiter._failures) == 10_000


@pytest.mark.parametrize(
    ("largest", "top", "step"),
    [("0", "1", "0.25"), ("0.3", "0.3", "0.1"), ("1234.57", "1500", "500"), ("97", "100", "25")],
)
def test_chart_scales_are_round(largest: str, top: str, step: str) -> None:
    assert nice_scale(Decimal(largest)) == (Decimal(top), Decimal(step))


def test_month_to_date_is_the_completed_days_of_the_month_and_none_on_the_first() -> None:
    assert month_so_far(dt.date(2026, 11, 1)) is None
    days = month_so_far(dt.date(2026, 12, 31))
    assert days is not None and (days.since, days.until, days.days) == (
        dt.date(2026, 12, 1),
        dt.date(2026, 12, 30),
        30,
    )
