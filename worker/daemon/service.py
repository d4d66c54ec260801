"""The long-running service, ``openrouter-watcher run``: where the scheduler and the HTTP
server meet, and how the process starts and stops.

- The jobs (:mod:`worker.daemon.jobs`): the sync on its schedule, the live poll, one job at a
  time each (``max_instances=1``, ``coalesce=True``), missed runs within
  ``misfire_grace_seconds`` still run.
- At start-up the database is awaited: a database that cannot be reached (PostgreSQL starting
  after the worker, a restart, a network hiccup) is retried with capped, jittered exponential
  backoff (:class:`Backoff`), one ``database_unavailable`` line per attempt; a signal stops the
  wait with exit 0. Once it answers, a schema behind head is a configuration error (exit 2).
- The HTTP server (:mod:`worker.daemon.http`, ``[http] listen``) serves beside the scheduler
  once the database answers; its address is claimed before the wait (:meth:`SyncDaemon.
  serve_http`), so a taken port stops ``run`` at once (exit 2).
- Leadership (:mod:`worker.daemon.leader`): several daemons may share one database; once the
  database answers, this one records itself and joins the election. Every daemon schedules
  the jobs and serves HTTP; only the leader's jobs run. A daemon that takes over from a dead
  leader runs the poll at once, and the sync when one was due (:meth:`SyncJob.due`). A
  daemon whose code expects another schema revision than the database's (an upgrade
  started elsewhere) stops, exit 2.
- SIGTERM / SIGINT: start no further key, let the key in flight commit or roll back, let the
  HTTP requests in flight finish, exit 0 within ``shutdown_grace_seconds``. A second signal
  exits at once; the database cannot hold a half-written key because every key is written in
  one transaction. The signal handler itself only queues the signal: Python runs it in the
  main thread between any two bytecodes, possibly while that thread holds a lock the stop
  needs (the thread pool's, while APScheduler starts a job), so the stop happens in a thread
  of its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TextIO

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_START,
    JobExecutionEvent,
    SchedulerEvent,
)
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.core.days import utc_now
from worker.core.errors import DatabaseUnavailableError, SchemaError
from worker.core.logs import get_logger
from worker.daemon import metrics
from worker.daemon.http.server import HttpServer
from worker.daemon.jobs import JOB_CRON, JOB_POLL, LivePoller, SyncJob
from worker.daemon.leader import Leadership
from worker.store.db import check_schema
from worker.store.models import ApiKey, User
from worker.vault.crypto import Keyring

log = get_logger("worker.scheduler")  # the name its lines have always had

NO_KEYS_HINT = (
    "no OpenRouter keys registered: add one with  "
    "printf '%s' \"$KEY\" | openrouter-watcher keys add --user EMAIL --name NAME  "
    "(users add EMAIL first)"
)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Waits between attempts: ``initial`` doubling up to ``maximum`` seconds, jittered.

    The jitter ("equal jitter": a random point in the upper half of the step) spreads the
    attempts of several workers that lost the same database at the same moment.
    """

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, …)."""
        step = min(self.maximum, self.initial * self.factor ** min(attempt - 1, 64))
        return step * (rng or random).uniform(0.5, 1.0)


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
        database_backoff: Backoff | None = None,
        notice: TextIO | None = None,
        http: HttpServer | None = None,
    ) -> None:
        """``notice``: where to print start-up advice for a person (stderr on a terminal);
        ``http``: the HTTP server to run beside the scheduler (already bound), if any."""
        self.settings = settings
        self.engine = engine
        self.session_factory = session_factory
        self.keyring = keyring
        self.stop = threading.Event()
        # Signal numbers from the handler to the thread that acts on them; None ends it.
        # SimpleQueue.put is reentrant, the one thing a signal handler may safely call here.
        self._signals: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._stopping = threading.Lock()  # one stop decision at a time (see _request_stop)
        self._exit_now = exit_now
        self.database_backoff = database_backoff or Backoff()
        self.notice = notice
        self.http = http
        self.leadership = Leadership(
            engine,
            settings.ha,
            on_elected=self._on_elected,
            on_lost=lambda: metrics.LEADERSHIP_CHANGES.labels(change="lost").inc(),
            on_schema_changed=self._on_schema_changed,
        )
        self._schema_error: SchemaError | None = None
        # The sync and the live poll: jobs of their own, so a poll never waits for a sync.
        self.sync = SyncJob(
            settings, engine, keyring, self.stop, self.next_run_time, self.leadership
        )
        self.poller = LivePoller(settings, engine, keyring, self.stop, self.leadership)
        self.scheduler = BlockingScheduler(
            timezone=dt.UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": settings.schedule.misfire_grace_seconds,
            },
        )

    # -- jobs --------------------------------------------------------------------------------

    def scheduler_alive(self) -> bool:
        """True while the scheduler runs and no signal asked it to stop (for /healthz)."""
        return bool(self.scheduler.running) and not self.stop.is_set()

    def next_run_time(self) -> dt.datetime | None:
        times = [job.next_run_time for job in self.scheduler.get_jobs() if job.next_run_time]
        return min(times) if times else None

    def _add_jobs(self) -> None:
        self.sync.add_jobs(self.scheduler)
        self.poller.add_jobs(self.scheduler)

    def _on_elected(self) -> None:
        """This daemon just took over (not at its start): run the poll now, and the sync if
        one was due (the dead leader's was cut short, or its time passed meanwhile)."""
        metrics.LEADERSHIP_CHANGES.labels(change="acquired").inc()
        now = utc_now()
        due = [JOB_POLL] if self.poller.interval_seconds else []
        if self.sync.due(now):
            due.append(JOB_CRON)
        for job_id in due:
            with contextlib.suppress(JobLookupError, SchedulerNotRunningError):
                self.scheduler.modify_job(job_id, next_run_time=dt.datetime.now(dt.UTC))
        log.info("takeover_work_scheduled", jobs=due)

    def _on_schema_changed(self, error: SchemaError) -> None:
        """The database moved to a revision this code does not know: stop (exit 2) rather
        than write to tables it misreads."""
        if self.stop.is_set():
            return
        self._schema_error = error
        self._request_stop("schema_revision_changed")

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

    def serve_http(self) -> HttpServer | None:
        """The HTTP server beside the scheduler, bound now (None if ``[http] listen`` is
        empty); :class:`~worker.core.errors.HttpListenError` (exit 2) if the address cannot be
        used. Its handlers ask this daemon for the scheduler's state."""
        from worker.daemon.http.app import build_app
        from worker.daemon.http.context import HttpContext
        from worker.store.locking import lock_is_held

        settings = self.settings
        if not settings.http.listen:
            return None
        ctx = HttpContext(
            settings=settings,
            session_factory=self.session_factory,
            scheduler_alive=self.scheduler_alive,
            next_run_at=self.next_run_time,
            sync_running=lambda: lock_is_held(self.engine),
            role=self.leadership.role,
        )
        server = HttpServer(
            build_app(ctx), settings.http, grace_seconds=settings.schedule.shutdown_grace_seconds
        )
        server.bind()
        self.http = server
        return server

    # -- start-up ----------------------------------------------------------------------------

    def wait_for_database(self, then: Callable[[], None] | None = None) -> bool:
        """Check the schema, then run ``then`` (the rest of the start-up that reads the
        database), retrying both while the database cannot be reached.

        Returns False if a signal stopped the wait. A database that answers but is not at the
        head revision raises :class:`worker.core.errors.SchemaError` at once: no retry fixes that.
        """
        url = self.engine.url.render_as_string(hide_password=True)
        attempt = 0
        while True:
            attempt += 1
            try:
                check_schema(self.engine)
                if then is not None:
                    then()
            except DatabaseUnavailableError as exc:
                delay = self.database_backoff.delay(attempt)
                log.warning(
                    "database_unavailable",
                    attempt=attempt,
                    retry_in_seconds=round(delay, 2),
                    url=url,
                    error=_first_line(exc.__cause__ or exc),
                )
                if self.stop.wait(delay):
                    return False
                continue
            if attempt > 1:
                log.info("database_available", attempts=attempt, url=url)
            return True

    def count_active_keys(self) -> int:
        """Active keys of active users: what a sync would fetch."""
        with self.session_factory() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(ApiKey)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.is_active.is_(True), User.is_active.is_(True))
                )
                or 0
            )

    def _check_limits(self) -> None:
        """A key that two [[limits]] tables match is a configuration error (exit 2) at start,
        as it is for `limits plan`: the daemon does not run on a policy that says two things."""
        if self.settings.limits:
            from worker.reports.limits import drifted

            with self.session_factory() as session:
                drifted(session, self.settings.limits)

    def _advise_when_no_keys(self) -> None:
        # A first `make run` otherwise shows only empty syncs, with no hint of the next step.
        if self.count_active_keys():
            return
        log.warning("no_keys_registered", hint=NO_KEYS_HINT)
        if self.notice is not None:
            print(NO_KEYS_HINT, file=self.notice)

    def _prepare(self) -> None:
        """What the start-up reads and writes once the database answers; run again from the
        start when the database goes away meanwhile (a restart just then)."""
        self._advise_when_no_keys()
        self._check_limits()
        self.leadership.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # No lock, no log line, no scheduler call here: the interrupted main thread may hold
        # the very lock they would take (see the module's docstring). The bug this avoids: a
        # SIGTERM during a job's start deadlocked the daemon until systemd killed it.
        self._signals.put(signum)

    def _watch_signals(self) -> None:
        while (signum := self._signals.get()) is not None:
            try:
                self._request_stop(signal.Signals(signum).name)
            except Exception:  # this thread must live on: a second signal still has to work
                log.exception("shutdown_request_failed")

    def _request_stop(self, name: str) -> None:
        with self._stopping:
            if self.stop.is_set():
                # Second signal: leave now. The key in flight has not committed, so the
                # database rolls it back; the run stays "running" and the next sync marks it
                # interrupted.
                log.warning("shutdown_forced", signal=name)
                self._exit_now(0)
                return
            log.info(
                "shutdown_requested",
                signal=name,
                grace_seconds=self.settings.schedule.shutdown_grace_seconds,
            )
            self.stop.set()
            # Before the scheduler runs (waiting for the database), the stop event is enough;
            # a stop between that wait and start() is caught by _on_scheduler_start.
            self._shutdown_scheduler()

    def _on_scheduler_start(self, _event: SchedulerEvent) -> None:
        with self._stopping:
            if self.stop.is_set():
                self._shutdown_scheduler()

    def _shutdown_scheduler(self) -> None:
        # The signal thread and the scheduler's start may both get here: the second is a no-op.
        if self.scheduler.running:
            with contextlib.suppress(SchedulerNotRunningError):
                self.scheduler.shutdown(wait=False)

    def run(self) -> int:
        """Await the database, start the scheduler and block until a signal stops it.

        Returns the exit code (0). A schema behind head raises SchemaError (exit code 2), at
        start or when another daemon's upgrade moves it while this one runs.
        """
        watcher = threading.Thread(target=self._watch_signals, name="signals", daemon=True)
        watcher.start()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            if not self.wait_for_database(then=self._prepare):
                log.info("daemon_stopped", reason="stopped while waiting for the database")
                return 0
            if self.leadership.is_leader:
                metrics.LEADERSHIP_CHANGES.labels(change="acquired").inc()
            self._add_jobs()
            self.scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
            self.scheduler.add_listener(self._on_scheduler_start, EVENT_SCHEDULER_START)
            log.info(
                "daemon_started",
                cron=self.settings.schedule.cron,
                interval_seconds=self.settings.schedule.interval_minutes * 60
                + self.settings.schedule.interval_seconds,
                run_at_startup=self.settings.schedule.run_at_startup,
                poll_interval_seconds=self.poller.interval_seconds,
            )
            if self.http is not None:
                self.http.start()
            self.scheduler.start()  # blocks until shutdown
            grace = self.settings.schedule.shutdown_grace_seconds
            deadline = time.monotonic() + grace
            if self.http is not None:
                self.http.request_stop()  # winds down while the key in flight finishes
            if not (
                self.sync.idle.wait(timeout=grace)
                and self.poller.idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            ):
                log.warning("shutdown_grace_expired", grace_seconds=grace)
                self._exit_now(0)
            self.leadership.stop()  # after the jobs: a standby takes over at its next heartbeat
            if self.http is not None:
                self.http.stop(timeout=deadline - time.monotonic())
            if self._schema_error is not None:
                raise self._schema_error
            log.info("daemon_stopped")
            return 0
        finally:
            self.leadership.stop()  # idempotent
            if self.http is not None:
                self.http.stop(timeout=0)  # idempotent; releases the socket on every path
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._signals.put(None)
            watcher.join(timeout=1.0)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None
