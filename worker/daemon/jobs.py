"""The daemon's scheduled work: the sync job and the live poll job, each an APScheduler job.

- **The sync** (:class:`SyncJob`): a cron trigger from ``[schedule] cron`` (default 00:20 UTC,
  just after OpenRouter completes a day), an optional interval, and one run at start-up; only
  one sync per database across processes (:mod:`worker.store.locking`): a run that finds the
  lock taken logs ``sync_skipped`` and fetches nothing. Each run ends with one
  ``sync_heartbeat`` line.
- **The live poll** (:class:`LivePoller`): every ``[live] interval_minutes`` (and once at
  start-up), plus once at ``[digest] at`` when a digest is configured. The jobs are separate
  from the sync's, and the default executor runs jobs in threads, so a poll never waits for a
  sync; ``max_instances=1`` and the poll lock keep two polls from ever running at once, in this
  process or any other. A poll that fails is logged (``poll_job_failed``) and the next one runs
  as scheduled.

Every daemon schedules both jobs; a job of a daemon that does not lead
(:mod:`worker.daemon.leader`) logs ``sync_skipped``/``poll_skipped`` with the reason
``standby`` and sends nothing, and a leader's job checks before every transaction that it still
leads. A daemon that just took over runs what was due (:meth:`SyncJob.due`, the poll at once).

Every OpenRouter request the jobs send is counted in :mod:`worker.daemon.metrics`: their
clients are handed its observer.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, select

from worker.alerts.deliver import Notifier
from worker.config import Settings
from worker.core.logs import get_logger
from worker.daemon import metrics
from worker.daemon.leader import Leadership
from worker.live.poll import locked_poll
from worker.openrouter import OpenRouterClient
from worker.store.db import make_session_factory
from worker.store.locking import Fence, LockLostError
from worker.store.models import SyncRun
from worker.sync.run import locked_sync
from worker.vault.crypto import Keyring

log = get_logger("worker.scheduler")
poll_log = get_logger("worker.live")

JOB_CRON = "sync-cron"
JOB_INTERVAL = "sync-interval"
JOB_POLL = "live-poll"
JOB_DIGEST = "live-digest"


def counted_client(settings: Settings) -> OpenRouterClient:
    """An OpenRouter client whose requests and retries the daemon's counters see."""
    return OpenRouterClient(settings.openrouter, observer=metrics.OPENROUTER_OBSERVER)


def standing_in(leadership: Leadership | None) -> str | None:
    """Why a job of this daemon does not run now (it is a standby), or None: it leads."""
    if leadership is None or leadership.is_leader:
        return None
    return f"standby: {leadership.leader_name or 'another daemon'} leads"


def fences_of(leadership: Leadership | None) -> list[Fence]:
    return [leadership.fence] if leadership is not None else []


def previous_fire(trigger: CronTrigger, now: dt.datetime) -> dt.datetime | None:
    """The cron schedule's last fire time at or before ``now`` within a day (None: none)."""
    fire = trigger.get_next_fire_time(None, now - dt.timedelta(days=1))
    last = None
    while fire is not None and fire <= now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(microseconds=1))
    return last


class SyncJob:
    """The scheduled sync; ``idle`` is set while no run is in progress."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        keyring: Keyring,
        stop: threading.Event,
        next_run_at: Callable[[], dt.datetime | None],
        leadership: Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.keyring = keyring
        self.stop = stop
        self.next_run_at = next_run_at
        self.leadership = leadership
        self.idle = threading.Event()
        self.idle.set()

    def due(self, now: dt.datetime) -> bool:
        """Whether a daemon that just took over should sync now: the last run was cut short
        (still ``running``: its daemon died mid-run), or no run started since the schedule
        last fired (the cron time, or one interval ago), or none ever ran."""
        with make_session_factory(self.engine)() as session:
            last = session.execute(
                select(SyncRun.status, SyncRun.started_at).order_by(SyncRun.id.desc()).limit(1)
            ).first()
        if last is None or last.status == "running":
            return True
        schedule = self.settings.schedule
        fired = previous_fire(CronTrigger.from_crontab(schedule.cron, timezone=dt.UTC), now)
        seconds = schedule.interval_minutes * 60 + schedule.interval_seconds
        if seconds:
            interval_fired = now - dt.timedelta(seconds=seconds)
            fired = max(fired, interval_fired) if fired is not None else interval_fired
        return fired is not None and last.started_at < fired

    def run(self) -> None:
        """One scheduled sync, then a heartbeat line with its summary and the next run time."""
        if self.stop.is_set():
            return
        if (reason := standing_in(self.leadership)) is not None:
            log.info("sync_skipped", trigger="schedule", reason=reason)
            return
        self.idle.clear()
        started = time.monotonic()
        try:
            with counted_client(self.settings) as client:
                summary = locked_sync(
                    self.engine,
                    self.settings,
                    self.keyring,
                    trigger="schedule",
                    stop=self.stop,
                    client=client,
                    fences=fences_of(self.leadership),
                    instance=self.leadership.name if self.leadership is not None else None,
                )
            metrics.record_sync("schedule", summary, time.monotonic() - started)
            fields: dict[str, Any] = {}
            if summary is not None:
                # The run's totals, not every key's result: one short line per run.
                fields = {k: v for k, v in summary.as_dict().items() if k != "results"}
                fields["failed_key_ids"] = [k.api_key_id for k in summary.failed]
            next_run = self.next_run_at()
            log.info(
                "sync_heartbeat",
                ran=summary is not None,
                **fields,
                next_run_at=next_run.astimezone(dt.UTC).isoformat() if next_run else None,
            )
        finally:
            self.idle.set()

    def add_jobs(self, scheduler: Any) -> None:
        """The cron job (its first run now, when ``run_at_startup``) and the interval one."""
        schedule = self.settings.schedule
        # The start-up run is the cron job's first run, not a one-shot job: APScheduler 3
        # removes a one-shot job after submitting it, and that removal raises JobLookupError
        # out of the scheduler's loop when a shutdown from the signal thread lands meanwhile.
        startup = {"next_run_time": dt.datetime.now(dt.UTC)} if schedule.run_at_startup else {}
        scheduler.add_job(
            self.run,
            CronTrigger.from_crontab(schedule.cron, timezone=dt.UTC),
            id=JOB_CRON,
            name="sync (cron)",
            replace_existing=True,
            **startup,
        )
        seconds = schedule.interval_minutes * 60 + schedule.interval_seconds
        if seconds:
            scheduler.add_job(
                self.run,
                IntervalTrigger(seconds=seconds, timezone=dt.UTC),
                id=JOB_INTERVAL,
                name="sync (interval)",
                replace_existing=True,
            )


class LivePoller:
    """The poll job: checks the channels at construction (a configuration error stops the
    daemon at start-up, exit 2), then polls when the scheduler says."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        keyring: Keyring,
        stop: threading.Event,
        leadership: Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.keyring = keyring
        self.stop = stop
        self.leadership = leadership
        self.idle = threading.Event()
        self.idle.set()
        self.notifier = Notifier(settings.channels, settings.live)
        if self.interval_seconds:
            self.notifier.check()

    @property
    def interval_seconds(self) -> int:
        live = self.settings.live
        return live.interval_seconds or live.interval_minutes * 60

    def job(self) -> None:
        """One poll; never raises (the next one runs as scheduled)."""
        if self.stop.is_set():
            return
        if (reason := standing_in(self.leadership)) is not None:
            poll_log.info("poll_skipped", reason=reason)
            return
        self.idle.clear()
        started = time.monotonic()
        try:
            with counted_client(self.settings) as client:
                summary = locked_poll(
                    self.engine,
                    self.settings,
                    self.keyring,
                    notifier=self.notifier,
                    stop=self.stop,
                    client=client,
                    fences=fences_of(self.leadership),
                )
            metrics.record_poll(summary, time.monotonic() - started)
        except LockLostError as exc:
            # Its lock or this daemon's leadership went (see the log line before): the
            # transactions it had committed stand; the leader's next poll does the rest.
            metrics.record_poll_error(time.monotonic() - started)
            poll_log.error("poll_stopped", error=str(exc))
        except Exception as exc:
            metrics.record_poll_error(time.monotonic() - started)
            poll_log.error("poll_job_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        finally:
            self.idle.set()

    def add_jobs(self, scheduler: Any) -> None:
        """The interval job (with a first poll now) and the digest's daily one."""
        if not self.interval_seconds:
            return
        scheduler.add_job(
            self.job,
            IntervalTrigger(seconds=self.interval_seconds, timezone=dt.UTC),
            id=JOB_POLL,
            name="live poll",
            replace_existing=True,
            next_run_time=dt.datetime.now(dt.UTC),
        )
        digest = self.settings.digest
        if digest.channels:
            scheduler.add_job(
                self.job,
                CronTrigger(hour=digest.time.hour, minute=digest.time.minute, timezone=dt.UTC),
                id=JOB_DIGEST,
                name="live poll (digest)",
                replace_existing=True,
            )
