"""The failed-token limit: at most ``[http] failed_auth_per_minute`` bad tokens per client
address in any minute, in memory (bounded), before the next token is even looked up."""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_TRACKED_CLIENTS = 10_000  # bounds the limiter's memory whatever the number of addresses


class FailedAuthLimiter:
    """At most ``limit`` bad tokens per client address in any 60 s; thread-safe."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: now)."""
        now = self._clock()
        with self._lock:
            failures = self._failures.get(client)
            if failures is None:
                return 0
            while failures and failures[0] <= now - WINDOW_SECONDS:
                failures.popleft()
            if not failures:
                del self._failures[client]
                return 0
            if len(failures) < self.limit:
                return 0
            return max(1, math.ceil(failures[0] + WINDOW_SECONDS - now))

    def failed(self, client: str) -> None:
        """Record one bad token from ``client``."""
        now = self._clock()
        with self._lock:
            failures = self._failures.pop(client, None) or collections.deque()
            failures.append(now)
            while len(failures) > self.limit:
                failures.popleft()
            self._failures[client] = failures  # most recent last: the oldest go first
            while len(self._failures) > MAX_TRACKED_CLIENTS:
                self._failures.popitem(last=False)
