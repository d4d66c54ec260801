"""What the operator (and a health check) needs to know: per key, how its syncs are going.

Read-only queries over the keys, the usage rows and the sync ledger; no network.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, func, select
from sqlalchemy.orm import Session

from worker.config import ScheduleSettings
from worker.models import ApiKey, SyncKeyResult, SyncRun, UsageStats, User, UTCDateTime, utcnow


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
        return [
            f"key {k.api_key_id} ({k.name}): {k.last_error or k.last_status}"
            for k in self.keys
            if k.active and k.last_status == "warning"
        ]

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` document (rendered by :func:`worker.render.to_json`)."""
        return {
            "healthy": self.healthy,
            "problems": self.problems,
            "warnings": self.warnings,
            "keys": self.keys,
            "last_run": self.last_run,
            "next_run_at": self.next_run_at,
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


def collect_status(
    session: Session,
    schedule: ScheduleSettings,
    now: dt.datetime | None = None,
    *,
    sync_running: bool = False,
) -> Status:
    """Gather the status of every key and the last run, in a handful of GROUP BY queries.

    ``sync_running``: whether a process holds the sync lock now; without one, a run still
    marked running was cut short.
    """
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
    held = {
        r.api_key_id: r
        for r in session.execute(
            select(
                UsageStats.api_key_id,
                func.count().label("rows"),
                func.max(UsageStats.date, type_=Date()).label("newest"),
            ).group_by(UsageStats.api_key_id)
        )
    }

    keys = []
    for key, email, user_active in session.execute(
        select(ApiKey, User.email, User.is_active).join(User).order_by(ApiKey.id)
    ):
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
            )
        )

    run = session.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(1)).first()
    running = session.scalars(
        select(SyncRun).where(SyncRun.status == "running").order_by(SyncRun.id.desc()).limit(1)
    ).first()
    return Status(
        keys=keys,
        last_run=_run_status(run),
        next_run_at=next_run_time(schedule, now),
        cut_short=None if sync_running else _run_status(running),
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
