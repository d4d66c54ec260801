"""The daemon's live poll: its own APScheduler job beside the sync's.

Every ``[live] interval_minutes`` (and once at start-up), plus once at ``[digest] at`` when a
digest is configured. The jobs are separate from the sync's, and the default executor runs
jobs in threads, so a poll never waits for a sync; ``max_instances=1`` and the poll lock keep
two polls from ever running at once, in this process or any other. A poll that fails is
logged (``poll_job_failed``) and the next one runs as scheduled.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from worker import metrics
from worker.alerts.deliver import Notifier
from worker.config import Settings
from worker.crypto import Keyring
from worker.live.poll import locked_poll
from worker.logs import get_logger

log = get_logger("worker.live")

JOB_POLL = "live-poll"
JOB_DIGEST = "live-digest"


class LivePoller:
    """The poll job: checks the channels at construction (a configuration error stops the
    daemon at start-up, exit 2), then polls when the scheduler says."""

    def __init__(
        self, settings: Settings, engine: Engine, keyring: Keyring, stop: threading.Event
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.keyring = keyring
        self.stop = stop
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
        self.idle.clear()
        started = time.monotonic()
        try:
            summary = locked_poll(
                self.engine, self.settings, self.keyring, notifier=self.notifier, stop=self.stop
            )
            metrics.record_poll(summary, time.monotonic() - started)
        except Exception as exc:
            metrics.record_poll_error(time.monotonic() - started)
            log.error("poll_job_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
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
