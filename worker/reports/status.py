"""What the operator (and a health check) needs to know: per key, how its syncs are going.

Read-only queries over the keys, the usage rows and the sync ledger; no network.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, func, select
from sqlalchemy.orm import Session

from worker.config import HaSettings, ScheduleSettings
from worker.config.limits import LimitTable
from worker.reports.daemons import Daemons, daemons
from worker.reports.limits import Drift, describe, drifted
from worker.reports.live import Figures, registered
from worker.store import guards
from worker.store.catalogue import SharedAccount, shared_accounts
from worker.store.guards import Action
from worker.store.models import (
    ApiKey,
    SyncKeyResult,
    SyncRun,
    UsageStats,
    User,
    UTCDateTime,
    utcnow,
)
from worker.store.models.guards import ABANDONED, FAILED

GUARD_FAILURES_SHOWN = 50  # the newest actions looked at for failures


@dataclass(frozen=True)
class KeyStatus:
    api_key_id: int
    user: str
    name: str
    kind: str
    active: bool
    last_success_at: dt.datetime | None
    last_status: str | None
    last_error: str | None
    last_attempt_at: dt.datetime | None
    rows: int
    newest_date: dt.date | None
    # The live poll's figures (worker.reports.live): an account's today, month, balance and
    # runway, or a key's today, month and limit left; None before its first poll.
    live: LiveFigures | None = None


@dataclass(frozen=True)
class LiveFigures:
    """What ``status`` shows of a key's live figures (``None``: not known)."""

    as_of: dt.datetime | None
    today: Decimal | None
    month: Decimal | None
    limit_remaining: Decimal | None
    balance: Decimal | None
    runway_days: Decimal | None
    month_end_projection: Decimal | None
    burn_rate_per_hour: Decimal | None
    poll_error: str | None

    @classmethod
    def of(cls, figures: Figures | None) -> LiveFigures | None:
        if figures is None:
            return None
        return cls(
            figures.as_of,
            figures.today,
            figures.month,
            figures.limit_remaining,
            figures.balance,
            figures.runway_days,
            figures.month_end_projection,
            figures.burn_rate_per_hour,
            figures.poll_error,
        )


@dataclass(frozen=True)
class RunStatus:
    id: int
    trigger: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    keys_ok: int
    keys_failed: int


@dataclass(frozen=True)
class Status:
    keys: list[KeyStatus]
    last_run: RunStatus | None
    next_run_at: dt.datetime | None
    # A run still marked running while no process holds the sync lock: it was cut short
    # (killed, the disk full, the database lost) before it could record its end.
    cut_short: RunStatus | None = None
    # Active management keys of one OpenRouter account (see store.catalogue).
    shared: tuple[SharedAccount, ...] = ()
    # Keys whose settings differ from their [[limits]] table, and guard actions that could
    # not be done in the last week (see docs/guards.md).
    drift: tuple[Drift, ...] = ()
    guard_failures: tuple[Action, ...] = ()
    # The daemons sharing the database (None: none ever ran on it).
    daemons: Daemons | None = None

    @property
    def healthy(self) -> bool:
        """False when the last sync of any active key failed, or a run was cut short."""
        return not self.problems

    @property
    def problems(self) -> list[str]:
        """Why the worker is not healthy, one line each (none when it is)."""
        found = [
            f"key {k.api_key_id} ({k.name}): its last sync failed: {k.last_error or 'unknown'}"
            for k in self.keys
            if k.active and k.last_status == "failed"
        ]
        if self.daemons is not None and self.daemons.problem is not None:
            found.append(self.daemons.problem)
        run = self.cut_short
        if run is not None:
            found.append(
                f"run #{run.id} ({run.trigger}, started {run.started_at:%Y-%m-%d %H:%M} UTC) "
                "is still marked running but no sync is running: it was cut short before it "
                "could record its end (see the logs); the next sync marks it interrupted"
            )
        return found

    @property
    def warnings(self) -> list[str]:
        """What the operator should do that does not make the worker unhealthy (e.g. an
        ordinary key whose account has no registered management key), one line each."""
        found = [
            f"key {k.api_key_id} ({k.name}): {k.last_error or k.last_status}"
            for k in self.keys
            if k.active and k.last_status == "warning"
        ]
        names = {k.api_key_id: k.name for k in self.keys}
        return (
            found
            + [
                f"keys {pair.first_key_id} ({names[pair.first_key_id]}) and {pair.second_key_id} "
                f"({names[pair.second_key_id]}) are management keys of the same OpenRouter account "
                f"(their key lists share {pair.shared_keys} keys): both store its activity, so "
                "totals over both count it twice; keep one (`openrouter-watcher keys disable ID` "
                "stops the doubling from the next sync)"
                for pair in self.shared
            ]
            + [describe(drift) for drift in self.drift]
            + [
                f"guard action {a.id} ({a.rule}, key {a.key_name!r}) {a.status}: {a.error}"
                for a in self.guard_failures
            ]
        )

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` document (rendered by :func:`worker.core.render.to_json`)."""
        return {
            "healthy": self.healthy,
            "problems": self.problems,
            "warnings": self.warnings,
            "keys": self.keys,
            "last_run": self.last_run,
            "next_run_at": self.next_run_at,
            "daemons": self.daemons.to_json() if self.daemons is not None else None,
        }


def next_run_time(schedule: ScheduleSettings, now: dt.datetime | None = None) -> dt.datetime:
    """When the daemon's schedule fires next (the earlier of cron and interval)."""
    # APScheduler's own cron trigger, so status and the daemon never disagree; imported here
    # (only its trigger, not the scheduler) so the rest of the command line does not load it.
    from apscheduler.triggers.cron import CronTrigger

    now = now or utcnow()
    trigger = CronTrigger.from_crontab(schedule.cron, timezone=dt.UTC)
    candidates = [trigger.get_next_fire_time(None, now)]
    interval = schedule.interval_minutes * 60 + schedule.interval_seconds
    if interval:
        candidates.append(now + dt.timedelta(seconds=interval))
    return min(c for c in candidates if c is not None).astimezone(dt.UTC)


def key_states(
    session: Session,
    now: dt.datetime | None = None,
    *,
    user_id: int | None = None,
    usage: bool = True,
    live: bool = True,
) -> list[KeyStatus]:
    """Every registered key (or ``user_id``'s) and how its syncs are going: the per-key part of
    :func:`collect_status`, which is all a health probe or a scrape needs.

    ``usage=False`` skips the one query that reads ``usage_stats`` (each key's row count and
    newest day, then 0 and None); ``live=False`` skips the live figures (``KeyStatus.live`` is
    None)."""
    latest_result = (
        select(SyncKeyResult.api_key_id, func.max(SyncKeyResult.id).label("id"))
        .group_by(SyncKeyResult.api_key_id)
        .subquery()
    )
    last = {
        r.api_key_id: r
        for r in session.execute(
            select(
                SyncKeyResult.api_key_id,
                SyncKeyResult.status,
                SyncKeyResult.error,
                SyncKeyResult.finished_at,
            ).join(latest_result, latest_result.c.id == SyncKeyResult.id)
        )
    }
    success = dict(
        session.execute(
            select(
                SyncKeyResult.api_key_id, func.max(SyncKeyResult.finished_at, type_=UTCDateTime())
            )
            .where(SyncKeyResult.status == "ok")
            .group_by(SyncKeyResult.api_key_id)
        ).all()
    )
    held = (
        {
            r.api_key_id: r
            for r in session.execute(
                select(
                    UsageStats.api_key_id,
                    func.count().label("rows"),
                    func.max(UsageStats.date, type_=Date()).label("newest"),
                ).group_by(UsageStats.api_key_id)
            )
        }
        if usage
        else {}
    )
    key_query = select(ApiKey, User.email, User.is_active).join(User).order_by(ApiKey.id)
    if user_id is not None:
        key_query = key_query.where(ApiKey.user_id == user_id)
    found = list(session.execute(key_query))
    live_figures = (
        registered(session, now=now, api_key_ids=[key.id for key, *_ in found]) if live else {}
    )
    keys = []
    for key, email, user_active in found:
        result = last.get(key.id)
        rows = held.get(key.id)
        keys.append(
            KeyStatus(
                api_key_id=key.id,
                user=email,
                name=key.name,
                kind=key.kind or "unknown",
                active=bool(key.is_active and user_active),
                last_success_at=success.get(key.id),
                last_status=result.status if result else None,
                last_error=result.error if result else None,
                last_attempt_at=result.finished_at if result else None,
                rows=rows.rows if rows else 0,
                newest_date=rows.newest if rows else None,
                live=LiveFigures.of(live_figures.get(key.id)),
            )
        )
    return keys


def collect_status(
    session: Session,
    schedule: ScheduleSettings,
    now: dt.datetime | None = None,
    *,
    sync_running: bool = False,
    user_id: int | None = None,
    live: bool = True,
    limits: Sequence[LimitTable] = (),
    ha: HaSettings | None = None,
) -> Status:
    """Gather the status of every key (:func:`key_states`) and the last run, in a handful of
    GROUP BY queries.

    ``sync_running``: whether a process holds the sync lock now; without one, a run still
    marked running was cut short. ``user_id``: only that user's keys, and the last run as that
    user saw it (its keys' ok and failed counts, ``failed`` only if one of them failed): what
    an API token of a user who is not an admin may see. ``live=False``: without the live
    figures (a caller that reads them for every key itself). ``limits``: the declared
    ``[[limits]]``, whose drift is reported among the warnings. ``ha``: with the daemons
    sharing the database (:mod:`worker.reports.daemons`) and whether one leads.
    """
    keys = key_states(session, now, user_id=user_id, live=live)
    seen = {k.api_key_id for k in keys}
    run = session.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(1)).first()
    running = session.scalars(
        select(SyncRun).where(SyncRun.status == "running").order_by(SyncRun.id.desc()).limit(1)
    ).first()
    last_run = _run_status(run)
    if last_run is not None and user_id is not None:
        last_run = _as_seen_by(session, last_run, {k.api_key_id for k in keys})
    return Status(
        keys=keys,
        last_run=last_run,
        next_run_at=next_run_time(schedule, now),
        cut_short=None if sync_running else _run_status(running),
        shared=tuple(shared_accounts(session, among={k.api_key_id for k in keys if k.active})),
        drift=tuple(d for d in drifted(session, limits) if d.account_id in seen),
        guard_failures=tuple(
            a
            for a in guards.history(session, user_id=user_id, last=GUARD_FAILURES_SHOWN)
            if a.status in (FAILED, ABANDONED)
            and (now or utcnow()) - a.created_at < dt.timedelta(days=7)
        ),
        daemons=daemons(session, ha) if ha is not None else None,
    )


def _run_status(run: SyncRun | None) -> RunStatus | None:
    if run is None:
        return None
    return RunStatus(
        run.id,
        run.trigger,
        run.status,
        run.started_at,
        run.finished_at,
        run.keys_ok,
        run.keys_failed,
    )


def _as_seen_by(session: Session, run: RunStatus, key_ids: set[int]) -> RunStatus:
    """``run`` counted over ``key_ids`` only: other users' keys are neither counted nor able
    to turn it ``failed``."""
    outcomes = list(
        session.execute(
            select(SyncKeyResult.api_key_id, SyncKeyResult.status).where(
                SyncKeyResult.run_id == run.id
            )
        )
    )
    ok = sum(1 for key_id, status in outcomes if key_id in key_ids and status == "ok")
    failed = sum(1 for key_id, status in outcomes if key_id in key_ids and status == "failed")
    status = run.status
    if status in ("ok", "failed"):
        status = "failed" if failed else "ok"
    return dataclasses.replace(run, status=status, keys_ok=ok, keys_failed=failed)
