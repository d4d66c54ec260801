"""The daemon's pieces that need no database: retry delays, APScheduler's log lines, signals."""

from __future__ import annotations

import datetime as dt
import io
import logging
import random
import signal
import threading
from collections.abc import Iterator

import pytest
import structlog
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler

from worker.config import Settings
from worker.core.logs import configure_logging, get_logger
from worker.daemon.service import Backoff, SyncDaemon
from worker.store.db import create_db_engine, make_session_factory
from worker.vault.crypto import Keyring

APSCHEDULER_INFO = (
    "Added job",
    "Scheduler started",
    "Running job",
    "executed successfully",
    "Scheduler has been shut down",
)


def test_database_backoff_doubles_from_one_second_to_a_jittered_minute() -> None:
    backoff = Backoff()
    rng = random.Random(7)
    for attempt, step in [(1, 1), (2, 2), (3, 4), (4, 8), (6, 32), (7, 60), (8, 60), (500, 60)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered: workers that lost one database spread out


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers (pytest's among them): put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = ("apscheduler", "httpx", "httpcore", "alembic")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    structlog.reset_defaults()


def _run_one_job(level: str, fmt: str) -> str:
    """Configure logging at ``level``/``fmt``, let a real scheduler run one job, return the log."""
    stream = io.StringIO()
    configure_logging(level, fmt, stream)
    executed = threading.Event()
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduler.add_listener(lambda _event: executed.set(), EVENT_JOB_EXECUTED)
    scheduler.add_job(lambda: None, id="probe", next_run_time=dt.datetime.now(dt.UTC))
    scheduler.start()
    try:
        assert executed.wait(10), "the job did not run within 10 s"
    finally:
        scheduler.shutdown(wait=True)
    logging.getLogger("apscheduler.scheduler").warning("an APScheduler warning")
    get_logger("worker.scheduler").info("sync_heartbeat")
    return stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["console", "json"])
def test_apscheduler_job_lines_stay_out_of_info_logs(fmt: str) -> None:
    out = _run_one_job("INFO", fmt)
    for text in APSCHEDULER_INFO:
        assert text not in out, text
    # its warnings and our own events still pass
    assert "an APScheduler warning" in out
    assert "sync_heartbeat" in out


@pytest.mark.usefixtures("restore_logging")
def test_apscheduler_job_lines_are_kept_for_debug() -> None:
    out = _run_one_job("DEBUG", "console")
    assert "Running job" in out and "executed successfully" in out and "Added job" in out


def test_a_second_signal_exits_even_when_acting_on_the_first_failed(keyring: Keyring) -> None:
    """The handler only queues the signal; the signal thread acts on it and survives an error,
    so a second signal still exits at once."""
    engine = create_db_engine("sqlite://")
    exits: list[int] = []
    daemon = SyncDaemon(
        Settings(), engine, make_session_factory(engine), keyring, exit_now=exits.append
    )

    def broken_shutdown() -> None:
        raise RuntimeError("the scheduler could not be stopped")

    daemon._shutdown_scheduler = broken_shutdown  # type: ignore[method-assign]
    watcher = threading.Thread(target=daemon._watch_signals)
    watcher.start()
    try:
        daemon._on_signal(signal.SIGTERM, None)
        daemon._on_signal(signal.SIGINT, None)
    finally:
        daemon._signals.put(None)
        watcher.join(10)
        engine.dispose()
    assert not watcher.is_alive()
    assert daemon.stop.is_set()
    assert exits == [0]
