"""``GET /metrics``: Prometheus text format, no token.

Two sources, one page:

- the daemon's live counters (:mod:`worker.daemon.metrics`: sync and poll durations and
  outcomes, rows written, OpenRouter requests and retries, alerts fired, failed deliveries,
  refused tokens, the process);
- figures read from the database at scrape time by :class:`DatabaseCollector`, whichever
  process wrote them (the daemon, a manual ``sync``, ``backfill`` or ``poll``), plus the
  scheduler's state. A database that cannot be read gives ``…_database_up 0`` and the live
  counters still answer.

The database's figures come in two levels that must never be added together, so each level is
its own family of series (``…_account_…`` and ``…_key_…``) and its own ``kind``:

- per active registered key (``account_id``, ``account``, ``kind``: ``management`` is a whole
  account, ``ordinary`` one key registered on its own): its completed days' spend this month
  (``/activity``) and its last sync; from the live poll its spend today and this month, balance
  and runway, limit left, and its last poll. A registered ordinary key that a registered
  account lists has no money series here: its spend is its account's, and one of the account's
  keys below (so a ``sum`` over an ``…_account_…`` family counts every dollar once);
- per key of a registered account, as the live poll last listed it (``kind="key"``, plus
  ``key``, its name on OpenRouter, and ``key_hash``, the first 12 characters of its hash, since
  names need not be unique): its spend today and this month, and its limit left.

Labels are bounded by the registered keys and the keys their accounts list (one series per
listed key and figure; a deleted key's go). Never a date, a user or a model. A figure that is
not known is absent, not 0: ``…_live_spend_today_usd`` needs a poll today. Month to date of
completed days covers the completed UTC days of the month (nothing on the 1st).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from worker.core.days import month_so_far
from worker.core.logs import get_logger
from worker.daemon import metrics
from worker.daemon.http.context import HttpContext
from worker.daemon.leader import Role
from worker.reports.choices import HASH_SHOWN
from worker.reports.daemons import SILENT, Daemons, daemons
from worker.reports.limits import drifted_or_none
from worker.reports.live import EVERY_SCOPE, Figures, figures, own_figures
from worker.reports.report import build_report
from worker.reports.status import key_states
from worker.store import guards
from worker.store.snapshots import SELF

log = get_logger("worker.http")
P = metrics.PREFIX
ACCOUNT_LABELS = ("account_id", "account", "kind")
KEY_LABELS = (*ACCOUNT_LABELS, "key", "key_hash")
KIND_KEY = "key"  # the kind of a key of an account (the other kinds are api_keys.kind's)
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
    live: Figures | None  # its own live figures (None: never polled)

    @property
    def spends_for_itself(self) -> bool:
        """Whether its live money is its own: not a key that a registered account lists."""
        return self.live is not None and self.live.scope != "alias"


@dataclass(frozen=True)
class Scraped:
    """The database's figures for one scrape."""

    accounts: list[AccountFigures]
    keys: list[Figures]  # the listed keys of the active accounts
    guard_actions: list[tuple[str, str, str, int]]  # (rule, action, status, how many)
    drifted: dict[int, int] | None  # account id → keys drifted (None: no [[limits]])
    daemons: Daemons | None  # the daemons sharing the database (None: none recorded)


def scrape(ctx: HttpContext) -> Scraped:
    """Every active account's figures and its keys', from :func:`key_states` (the per-key
    part of the status, no runs or schedule), one ``--by account`` report and one read of the
    live figures."""
    now = ctx.clock()
    with ctx.session_factory() as session:
        active = [key for key in key_states(session, now, usage=False, live=False) if key.active]
        days = month_so_far(now.date())
        spent: dict[int, Decimal] = {}
        if days is not None:
            report = build_report(session, "account", days)
            spent = {int(row.group["account_id"]): row.totals.cost for row in report.rows}
        found = figures(
            session,
            now=now,
            burn_rate_hours=ctx.settings.live.burn_rate_hours,
            scopes=EVERY_SCOPE,
            api_key_ids=[key.api_key_id for key in active],
        )
        guard_actions = guards.counts(session)
        limits = ctx.settings.limits
        drift = drifted_or_none(session, limits) if limits else []
        shared = daemons(session, ctx.settings.ha)
    own = own_figures(found)
    accounts = [
        AccountFigures(
            account_id=key.api_key_id,
            account=key.name,
            kind=key.kind,
            month_to_date=spent.get(key.api_key_id, Decimal(0)),
            last_success_at=key.last_success_at,
            last_attempt_at=key.last_attempt_at,
            last_failed=key.last_status == "failed",
            live=own.get(key.api_key_id),
        )
        for key in active
    ]
    counted: dict[int, int] | None = None
    if limits:
        counted = {a.account_id: 0 for a in accounts}
        for item in drift:
            if item.account_id in counted:
                counted[item.account_id] += 1
    others = [f for f in found if f.key_hash != SELF]
    return Scraped(accounts, others, guard_actions, counted, shared)


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
        yield from _role_metrics(ctx.role())
        next_run = ctx.next_run_at()
        if next_run is not None:
            gauge = _gauge("next_sync_timestamp_seconds", "When the next scheduled sync starts")
            gauge.add_metric([], next_run.timestamp())
            yield gauge
        up = _gauge("database_up", "1 if this scrape could read the database, else 0")
        try:
            scraped = scrape(ctx)
        except Exception as exc:
            log.warning("metrics_database_failed", error=f"{type(exc).__name__}: {exc}")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _account_metrics(scraped.accounts)
        yield from _account_live_metrics(scraped.accounts)
        yield from _key_live_metrics(scraped.keys)
        yield from _guard_metrics(scraped)
        yield from _daemon_metrics(scraped.daemons)


def _role_metrics(role: Role | None) -> Iterator[Metric]:
    """This daemon's part in the election (none outside a daemon)."""
    if role is None:
        return
    info = _gauge(
        "instance_info", "This daemon: its [ha] instance_name and role", ("instance", "role")
    )
    info.add_metric([role.instance, role.role], 1)
    leads = _gauge("instance_leader", "1 while this daemon leads (runs the scheduled work)")
    leads.add_metric([], 1 if role.role == "leader" else 0)
    since = _gauge("instance_role_since_timestamp_seconds", "When this daemon's role last changed")
    since.add_metric([], role.since.timestamp())
    yield from (info, leads, since)


def _daemon_metrics(found: Daemons | None) -> Iterator[Metric]:
    """The database's leadership, whichever daemon answers (absent: no daemon recorded)."""
    if found is None:
        return
    present = _gauge(
        "leader_present",
        "1 if a daemon leads (its heartbeat within [ha] takeover_seconds plus one heartbeat)",
    )
    present.add_metric([], 1 if found.leader is not None else 0)
    yield present
    if found.leaderless_seconds is not None:
        leaderless = _gauge(
            "leaderless_seconds", "How long no daemon has led while some daemon expected one"
        )
        leaderless.add_metric([], found.leaderless_seconds)
        yield leaderless
    by_role = _gauge(
        "instances", "Daemons recorded in the database, by role (silent: not heard from)", ("role",)
    )
    for role in ("leader", "standby", "stopped", SILENT):
        by_role.add_metric([role], sum(1 for d in found.daemons if d.role == role))
    yield by_role


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


# What each level's series stand for, at the end of their help text.
_PER = {
    "account": "per registered key: a whole account (kind management) or an ordinary key "
    "registered on its own",
    "key": "per key of a registered account (kind key); never add these to the account's",
}


def _figure_gauges(
    level: str, labels: tuple[str, ...], figures_: Iterable[tuple[list[str], Figures]]
) -> Iterator[Metric]:
    """The live money figures of one level, one family each; unknown figures are absent."""
    wanted = {
        "live_spend_today_usd": ("today", "USD spent today (UTC) so far, at the last poll"),
        "live_spend_month_usd": (
            "month",
            "USD spent this month (UTC) so far, today included, at the last poll",
        ),
        "live_limit_remaining_usd": (
            "limit_remaining",
            "USD left of the key's spending limit at the last poll (absent without a limit)",
        ),
    }
    if level == "account":
        wanted["live_balance_usd"] = ("balance", "The account's credit balance in USD")
        wanted["live_runway_days"] = (
            "runway_days",
            "Days of balance (an ordinary key: of its limit) left at the mean daily spend of "
            "the last 7 complete days",
        )
    gauges = {
        name: (field, _gauge(f"{level}_{name}", f"{text}; {_PER[level]}", labels))
        for name, (field, text) in wanted.items()
    }
    for label_values, fig in figures_:
        for field, gauge in gauges.values():
            value = getattr(fig, field)
            if value is not None:
                gauge.add_metric(label_values, float(value))
    yield from (gauge for _, gauge in gauges.values())


def _account_live_metrics(accounts: list[AccountFigures]) -> Iterator[Metric]:
    polled = _gauge(
        "account_last_poll_success_timestamp_seconds",
        "When the registered key's last successful live poll ran (absent: never)",
        ACCOUNT_LABELS,
    )
    poll_failed = _gauge(
        "account_last_poll_failed",
        "1 if the registered key's last live poll failed, else 0",
        ACCOUNT_LABELS,
    )
    own: list[tuple[list[str], Figures]] = []
    for account in accounts:
        labels = [str(account.account_id), account.account, account.kind]
        live = account.live
        if live is None:
            continue
        if live.as_of is not None:
            polled.add_metric(labels, live.as_of.timestamp())
        poll_failed.add_metric(labels, 1 if live.poll_error else 0)
        if account.spends_for_itself:
            own.append((labels, live))
    yield from (polled, poll_failed)
    yield from _figure_gauges("account", ACCOUNT_LABELS, own)


def _key_live_metrics(keys: list[Figures]) -> Iterator[Metric]:
    labelled = [
        (
            [str(k.api_key_id), k.account or "", KIND_KEY, k.name, k.key_hash[:HASH_SHOWN]],
            k,
        )
        for k in keys
    ]
    yield from _figure_gauges("key", KEY_LABELS, labelled)


def _guard_metrics(scraped: Scraped) -> Iterator[Metric]:
    actions = _gauge(
        "guard_actions",
        "Guard actions recorded (docs/guards.md), by rule, action (disable, cap, limit) and "
        "outcome (planned in dry-run, pending, sent, failed, abandoned, restored, kept)",
        ("rule", "action", "outcome"),
    )
    for rule, action, status, count in scraped.guard_actions:
        actions.add_metric([rule, action, status], count)
    yield actions
    if scraped.drifted is not None:
        drift = _gauge(
            "limits_drifted_keys",
            "Keys of the account whose settings differ from their [[limits]] table, as the "
            "last listing saw them",
            ("account_id", "account"),
        )
        names = {a.account_id: a.account for a in scraped.accounts}
        for account_id, count in scraped.drifted.items():
            drift.add_metric([str(account_id), names[account_id]], count)
        yield drift


def metrics_endpoint(ctx: HttpContext) -> Callable[[Request], Response]:
    """``GET /metrics``: the live registry, then the database's figures."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(ctx))

    def endpoint(_request: Request) -> Response:
        body = generate_latest(metrics.REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    return endpoint
