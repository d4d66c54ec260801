"""The long-running service: APScheduler 3 wakes the sync on a schedule.

- A cron trigger from ``[schedule] cron`` (default 00:20 UTC, just after OpenRouter completes a
  day), an optional interval, and one run at start-up; one job at a time (``max_instances=1``,
  ``coalesce=True``), missed runs within ``misfire_grace_seconds`` still run.
- Only one sync per database across processes (:mod:`worker.locking`): a run that finds the
  lock taken logs ``sync_skipped`` and fetches nothing.
- SIGTERM / SIGINT: start no further key, let the key in flight commit or roll back, exit 0
  within ``shutdown_grace_seconds``. A second signal exits at once; the database cannot hold a
  half-written key because every key is written in one transaction.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.crypto import Keyring
from worker.logs import get_logger
from worker.sync import locked_sync

log = get_logger("worker.scheduler")

JOB_CRON = "sync-cron"
JOB_INTERVAL = "sync-interval"
JOB_STARTUP = "sync-startup"


class SyncDaemon:
    """Owns the scheduler, the stop event and the signal handling of ``openrouter-watcher run``."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        session_factory: sessionmaker[Session],
        keyring: Keyring,
        *,
        exit_now: Callable[[int], None] = os._exit,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.session_factory = session_factory
        self.keyring = keyring
        self.stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._exit_now = exit_now
        self.scheduler = BlockingScheduler(
            timezone=dt.UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": settings.schedule.misfire_grace_seconds,
            },
        )

    # -- jobs --------------------------------------------------------------------------------

    def sync_job(self) -> None:
        """One scheduled sync, then a heartbeat line with its summary and the next run time."""
        if self.stop.is_set():
            return
        self._idle.clear()
        try:
            summary = locked_sync(
                self.engine,
                self.session_factory,
                self.settings,
                self.keyring,
                trigger="schedule",
                stop=self.stop,
            )
            fields: dict[str, Any] = {}
            if summary is not None:
                # The run's totals, not every key's result: one short line per run.
                fields = {k: v for k, v in summary.as_dict().items() if k != "results"}
                fields["failed_key_ids"] = [k.api_key_id for k in summary.failed]
            log.info(
                "sync_heartbeat",
                ran=summary is not None,
                **fields,
                next_run_at=_iso(self.next_run_time()),
            )
        finally:
            self._idle.set()

    def next_run_time(self) -> dt.datetime | None:
        times = [job.next_run_time for job in self.scheduler.get_jobs() if job.next_run_time]
        return min(times) if times else None

    def _add_jobs(self) -> None:
        schedule = self.settings.schedule
        self.scheduler.add_job(
            self.sync_job,
            CronTrigger.from_crontab(schedule.cron, timezone=dt.UTC),
            id=JOB_CRON,
            name="sync (cron)",
            replace_existing=True,
        )
        seconds = schedule.interval_minutes * 60 + schedule.interval_seconds
        if seconds:
            self.scheduler.add_job(
                self.sync_job,
                IntervalTrigger(seconds=seconds, timezone=dt.UTC),
                id=JOB_INTERVAL,
                name="sync (interval)",
                replace_existing=True,
            )
        if schedule.run_at_startup:
            self.scheduler.add_job(
                self.sync_job,
                id=JOB_STARTUP,
                name="sync (start-up)",
                next_run_time=dt.datetime.now(dt.UTC),
            )

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning(
                "sync_missed", job_id=event.job_id, scheduled_at=_iso(event.scheduled_run_time)
            )
        elif event.exception is not None:
            log.error(
                "sync_job_failed",
                job_id=event.job_id,
                error=f"{type(event.exception).__name__}: {event.exception}",
            )

    # -- lifecycle ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            # Second signal: leave now. The key in flight has not committed, so the database
            # rolls it back; the run stays "running" and the next sync marks it interrupted.
            log.warning("shutdown_forced", signal=name)
            self._exit_now(0)
            return
        log.info(
            "shutdown_requested",
            signal=name,
            grace_seconds=self.settings.schedule.shutdown_grace_seconds,
        )
        self.stop.set()
        self.scheduler.shutdown(wait=False)

    def run(self) -> int:
        """Start the scheduler and block until a signal stops it. Returns the exit code."""
        self._add_jobs()
        self.scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            log.info(
                "daemon_started",
                cron=self.settings.schedule.cron,
                interval_seconds=self.settings.schedule.interval_minutes * 60
                + self.settings.schedule.interval_seconds,
                run_at_startup=self.settings.schedule.run_at_startup,
            )
            self.scheduler.start()  # blocks until shutdown
            grace = self.settings.schedule.shutdown_grace_seconds
            if not self._idle.wait(timeout=grace):
                log.warning("shutdown_grace_expired", grace_seconds=grace)
                self._exit_now(0)
            log.info("daemon_stopped")
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None
