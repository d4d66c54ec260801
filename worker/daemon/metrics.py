"""The daemon's live Prometheus counters: what happened in this process since it started.

Figures the database already holds (spend, the last successful sync of each key) are read at
scrape time by :mod:`worker.daemon.http.metrics`, whichever process wrote them; the objects here
count events only the running process sees. They live in their own registry
(:data:`REGISTRY`), not prometheus_client's global one, so importing the worker registers
nothing behind anyone's back and ``/metrics`` shows exactly this list.

Label values are bounded by construction: trigger, run status, a key's result code, a row
operation, an OpenRouter endpoint path, an outcome class, and the names of the configured
alert rules and channels, a leadership change. Never a key, a user, a date or a channel's URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

if TYPE_CHECKING:
    from worker.live.poll import PollSummary
    from worker.sync.summary import RunSummary

# Without this every counter gets a `_created` twin: twice the series, nothing an alert uses.
disable_created_metrics()
PREFIX = "openrouter_watcher"
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

SYNC_DURATION = Histogram(
    f"{PREFIX}_sync_duration_seconds",
    "Wall time of the daemon's syncs, by trigger",
    ["trigger"],
    # From an unchanged re-sync of a few keys to thousands of keys behind a slow upstream.
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
SYNC_RUNS = Counter(
    f"{PREFIX}_sync_runs",
    "The daemon's syncs by how they ended: ok, failed (some key failed), interrupted, "
    "or skipped (another process held the sync lock)",
    ["status"],
    registry=REGISTRY,
)
KEY_SYNCS = Counter(
    f"{PREFIX}_key_syncs",
    "Keys synced by the daemon, by result: ok or the failure reason "
    "(unauthorized, not_management_key, rate_limited, upstream_unavailable, …)",
    ["result"],
    registry=REGISTRY,
)
ROWS_WRITTEN = Counter(
    f"{PREFIX}_rows_written",
    "usage_stats rows the daemon's syncs wrote, by operation",
    ["operation"],
    registry=REGISTRY,
)
OPENROUTER_REQUESTS = Counter(
    f"{PREFIX}_openrouter_requests",
    "HTTP requests to OpenRouter, retries included, by endpoint and outcome "
    "(2xx, 4xx, 429, 5xx, error: no answer)",
    ["endpoint", "outcome"],
    registry=REGISTRY,
)
OPENROUTER_RETRIES = Counter(
    f"{PREFIX}_openrouter_retries",
    "Retries of OpenRouter requests, by endpoint and what caused them (429, 5xx, error)",
    ["endpoint", "reason"],
    registry=REGISTRY,
)
POLL_DURATION = Histogram(
    f"{PREFIX}_poll_duration_seconds",
    "Wall time of the daemon's live polls, the delivery of their alerts included",
    # A poll is a few requests per account; a receiver that hangs costs its delivery deadline.
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
POLL_RUNS = Counter(
    f"{PREFIX}_poll_runs",
    "The daemon's live polls by how they ended: ok, failed (some key failed), skipped "
    "(another process held the poll lock), or error (the poll itself raised)",
    ["status"],
    registry=REGISTRY,
)
ALERTS_FIRED = Counter(
    f"{PREFIX}_alerts_fired",
    "Alerts the daemon's polls fired, by rule name ((digest): the daily digest)",
    ["rule"],
    registry=REGISTRY,
)
ALERT_DELIVERIES_FAILED = Counter(
    f"{PREFIX}_alert_deliveries_failed",
    "Notifications the daemon's polls could not deliver (every attempt of one poll failed, "
    "or the channel is gone), by channel name",
    ["channel"],
    registry=REGISTRY,
)
LEADERSHIP_CHANGES = Counter(
    f"{PREFIX}_leadership_changes",
    "Times this daemon became the leader (acquired) or lost the lead (lost: its lock's "
    "connection closed)",
    ["change"],
    registry=REGISTRY,
)
HTTP_AUTH_FAILURES = Counter(
    f"{PREFIX}_http_auth_failures",
    "API requests refused for a bad token (401) or too many bad tokens (429)",
    ["status"],
    registry=REGISTRY,
)


def outcome_of(status: int | None) -> str:
    """The ``outcome`` label for an HTTP status, or ``error`` when no answer came (None)."""
    if status is None:
        return "error"
    if status == 429:
        return "429"
    return f"{status // 100}xx"


def record_openrouter_request(endpoint: str, status: int | None) -> None:
    """Count one HTTP exchange with OpenRouter (``endpoint``: ``/activity``, ``/key``, …)."""
    OPENROUTER_REQUESTS.labels(endpoint=endpoint, outcome=outcome_of(status)).inc()


def record_openrouter_retry(endpoint: str, status: int | None) -> None:
    """Count one retry, caused by an answer with ``status`` or by no answer (None)."""
    OPENROUTER_RETRIES.labels(endpoint=endpoint, reason=outcome_of(status)).inc()


class _OpenRouterCounters:
    """The OpenRouter client's :class:`~worker.openrouter.transport.Observer`: the daemon hands
    it to the clients of its jobs, so every request and retry they send is counted here."""

    def request(self, endpoint: str, status: int | None) -> None:
        record_openrouter_request(endpoint, status)

    def retry(self, endpoint: str, status: int | None) -> None:
        record_openrouter_retry(endpoint, status)


OPENROUTER_OBSERVER = _OpenRouterCounters()


def record_sync(trigger: str, summary: RunSummary | None, seconds: float) -> None:
    """Count one of the daemon's syncs (``summary`` None: skipped, another held the lock)."""
    if summary is None:
        SYNC_RUNS.labels(status="skipped").inc()
        return
    SYNC_DURATION.labels(trigger=trigger).observe(seconds)
    SYNC_RUNS.labels(status=summary.status).inc()
    for outcome in summary.keys:
        KEY_SYNCS.labels(result=outcome.reason or outcome.status).inc()
    counts = summary.counts
    for operation in ("inserted", "updated", "deleted"):
        ROWS_WRITTEN.labels(operation=operation).inc(getattr(counts, operation))


def record_poll(summary: PollSummary | None, seconds: float) -> None:
    """Count one of the daemon's polls (``summary`` None: skipped, another held the lock)."""
    if summary is None:
        POLL_RUNS.labels(status="skipped").inc()
        return
    POLL_DURATION.observe(seconds)
    POLL_RUNS.labels(status=summary.status).inc()
    for fired in summary.fired:
        ALERTS_FIRED.labels(rule=fired.rule).inc()
    for channel, failures in summary.delivery.failed_channels.items():
        ALERT_DELIVERIES_FAILED.labels(channel=channel).inc(failures)


def record_poll_error(seconds: float) -> None:
    """Count one of the daemon's polls that raised (it is logged as ``poll_job_failed``)."""
    POLL_DURATION.observe(seconds)
    POLL_RUNS.labels(status="error").inc()
