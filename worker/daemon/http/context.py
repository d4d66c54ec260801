"""What every request handler needs: the settings, the database and the daemon's state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.core.days import utc_now
from worker.daemon.http.limiter import FailedAuthLimiter
from worker.daemon.leader import Role


def _never() -> bool:
    return False


def _unknown() -> dt.datetime | None:
    return None


def _no_role() -> Role | None:
    return None


@dataclass(frozen=True, kw_only=True)
class HttpContext:
    """The application's collaborators, passed in so tests build one without a daemon.

    ``scheduler_alive`` and ``next_run_at`` ask the running daemon, ``sync_running`` whether
    a process holds the sync lock (:func:`worker.store.locking.lock_is_held`, asked only where a
    person looks: the status endpoint and the dashboard, never on every probe); ``clock`` is
    the UTC time every "today" and "month to date" is computed from; ``role`` this daemon's
    part in the election (:mod:`worker.daemon.leader`; None outside a daemon).
    """

    settings: Settings
    session_factory: sessionmaker[Session]
    scheduler_alive: Callable[[], bool] = _never
    next_run_at: Callable[[], dt.datetime | None] = _unknown
    sync_running: Callable[[], bool] = _never
    clock: Callable[[], dt.datetime] = utc_now
    role: Callable[[], Role | None] = _no_role
    limiter: FailedAuthLimiter = field(init=False)

    def __post_init__(self) -> None:
        limit = self.settings.http.failed_auth_per_minute
        object.__setattr__(self, "limiter", FailedAuthLimiter(limit))

    def today(self) -> dt.date:
        """The current UTC day by :attr:`clock`."""
        return self.clock().astimezone(dt.UTC).date()
