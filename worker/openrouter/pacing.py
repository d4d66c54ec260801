"""Staying under OpenRouter's published request rates, by construction.

``/analytics/query`` allows 64 requests a minute per account. Each attempt (a retry included)
waits for its turn at a :class:`Pace` instead of collecting 429s. The sync and ``reconcile``
hand the client the account's budget kept in the database
(:class:`worker.store.budget.AnalyticsBudget`), which every process counts: a backfill started
a minute after a sync sees the sync's requests. :data:`ANALYTICS`, one in-memory limiter shared
by the clients of the process, paces a caller that has no account to name.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Protocol

ANALYTICS_PER_MINUTE = 64
ANALYTICS_WINDOW = 60.0  # seconds


class Pace(Protocol):
    """Spaces requests out: at most a number of them in any ``period`` seconds.

    ``waits_out``: the pace counts every request sent through the account (a budget every
    process shares), so a 429 means someone else spent the window: the request waits the
    window out before it gives up (see :meth:`worker.openrouter.retry.RetryPolicy.gives_up`).
    """

    period: float
    waits_out: bool

    def acquire(self) -> float:
        """Wait for a turn; return the seconds waited."""
        ...


class RateLimiter:
    """At most ``limit`` acquisitions in any ``period`` seconds (a sliding window), in this
    process only: a 429 is not waited out (others may send through the same account)."""

    waits_out = False

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._stamps: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a turn; return the seconds waited. Callers queue on the lock in turn."""
        waited = 0.0
        with self._lock:
            while True:
                now = self._clock()
                while self._stamps and self._stamps[0] <= now - self.period:
                    self._stamps.popleft()
                if len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return waited
                pause = self._stamps[0] + self.period - now
                self._sleep(pause)
                waited += pause


class Paces:
    """Several paces at once, in order (the process's limiter, then the account's budget, whose
    turn is then taken just before the request goes out)."""

    def __init__(self, *paces: Pace) -> None:
        self.paces = paces
        self.period = max(pace.period for pace in paces)
        self.waits_out = any(pace.waits_out for pace in paces)

    def acquire(self) -> float:
        return sum(pace.acquire() for pace in self.paces)


ANALYTICS = RateLimiter(ANALYTICS_PER_MINUTE, ANALYTICS_WINDOW)
