"""Staying under OpenRouter's published request rates, by construction.

``/analytics/query`` allows 64 requests a minute per account: :data:`ANALYTICS` is one limiter
shared by every client of the process, and each attempt (a retry included) waits for its turn
instead of collecting 429s.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

ANALYTICS_PER_MINUTE = 64


class RateLimiter:
    """At most ``limit`` acquisitions in any ``period`` seconds (a sliding window)."""

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


ANALYTICS = RateLimiter(ANALYTICS_PER_MINUTE, 60.0)
