"""``GET /metrics``: Prometheus text format, no token.

Two sources, one page:

- the daemon's live counters (:mod:`worker.metrics`: sync durations and outcomes, rows
  written, OpenRouter requests and retries, refused tokens, the process);
- figures read from the database at scrape time by :class:`DatabaseCollector`, whichever
  process wrote them (the daemon, a manual ``sync`` or ``backfill``): per active account (a
  registered key) its spend this month and its last successful and last attempted sync, plus
  the scheduler's state. A database that cannot be read gives ``…_database_up 0`` and the
  live counters still answer.

Labels are bounded: ``account_id``, ``account`` and ``kind`` (the registered key's id, name and
kind: ``management`` is a whole account, ``ordinary`` one key of it, so sum over
``kind="management"`` to count an account's spend once). Never a date, a user or a model.
Month to date covers the completed UTC days of the month, the days OpenRouter reports (nothing
on the 1st).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from worker import metrics
from worker.days import month_so_far
from worker.http.context import HttpContext
from worker.logs import get_logger
from worker.report import build_report
from worker.status import collect_status

log = get_logger("worker.http")
P = metrics.PREFIX
ACCOUNT_LABELS = ("account_id", "account", "kind")
# The classic text format (what generate_latest writes), which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class AccountFigures:
    """What the database says about one active account (a registered key) right now."""

    account_id: int
    account: str
    kind: str  # management (an account), ordinary (one key of an account) or unknown
    month_to_date: Decimal
    last_success_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_failed: bool


def account_figures(ctx: HttpContext) -> list[AccountFigures]:
    """Each active account's figures, from :func:`collect_status` and one ``--by account``
    report."""
    now = ctx.clock()
    with ctx.session_factory() as session:
        status = collect_status(session, ctx.settings.schedule, now, usage=False)
        days = month_so_far(now.date())
        spent: dict[int, Decimal] = {}
        if days is not None:
            report = build_report(session, "account", days)
            spent = {int(row.group["account_id"]): row.totals.cost for row in report.rows}
    return [
        AccountFigures(
            account_id=key.api_key_id,
            account=key.name,
            kind=key.kind,
            month_to_date=spent.get(key.api_key_id, Decimal(0)),
            last_success_at=key.last_success_at,
            last_attempt_at=key.last_attempt_at,
            last_failed=key.last_status == "failed",
        )
        for key in status.keys
        if key.active
    ]


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{P}_{name}", documentation, labels=list(labels))


class DatabaseCollector(Collector):
    """Reads the database on every scrape (see the module docstring)."""

    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx

    def describe(self) -> Iterator[Metric]:
        # Declared, so registering the collector does not query the database.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        running = _gauge("scheduler_running", "1 while the daemon's scheduler runs")
        running.add_metric([], 1 if ctx.scheduler_alive() else 0)
        yield running
        next_run = ctx.next_run_at()
        if next_run is not None:
            gauge = _gauge("next_sync_timestamp_seconds", "When the next scheduled sync starts")
            gauge.add_metric([], next_run.timestamp())
            yield gauge
        up = _gauge("database_up", "1 if this scrape could read the database, else 0")
        try:
            accounts = account_figures(ctx)
        except Exception as exc:
            log.warning("metrics_database_failed", error=f"{type(exc).__name__}: {exc}")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _account_metrics(accounts)


def _account_metrics(accounts: list[AccountFigures]) -> Iterator[Metric]:
    spend = _gauge(
        "account_spend_month_to_date_usd",
        "USD spent this month by the account, completed UTC days (OpenRouter's /activity)",
        ACCOUNT_LABELS,
    )
    success = _gauge(
        "account_last_success_timestamp_seconds",
        "When the account's last successful sync finished (absent: never)",
        ACCOUNT_LABELS,
    )
    attempt = _gauge(
        "account_last_attempt_timestamp_seconds",
        "When the account's last sync, successful or not, finished (absent: never)",
        ACCOUNT_LABELS,
    )
    failed = _gauge(
        "account_last_sync_failed", "1 if the account's last sync failed, else 0", ACCOUNT_LABELS
    )
    for account in accounts:
        labels = [str(account.account_id), account.account, account.kind]
        spend.add_metric(labels, float(account.month_to_date))
        if account.last_success_at is not None:
            success.add_metric(labels, account.last_success_at.timestamp())
        if account.last_attempt_at is not None:
            attempt.add_metric(labels, account.last_attempt_at.timestamp())
        failed.add_metric(labels, 1 if account.last_failed else 0)
    yield from (spend, success, attempt, failed)


def metrics_endpoint(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /metrics``: the live registry, then the database's figures."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(ctx))

    def endpoint(_request: Request) -> Response:
        body = generate_latest(metrics.REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    return endpoint
