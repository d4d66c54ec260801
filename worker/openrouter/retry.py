"""When to retry a request to OpenRouter, and how long to wait: one policy object.

Transient failures are retried: connection errors, timeouts, a connection dropped mid-answer,
429 (rate limited), 408 (a query that ran too long) and every 5xx. The wait is the server's
``Retry-After`` when it sent one (capped), else an exponential backoff with jitter. A request
stops at ``max_attempts`` attempts, or earlier when the next wait would pass its deadline; a
rate-limited request with a published budget (analytics' 64 a minute) waits out the budget's
window before it counts its attempts.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
from dataclasses import dataclass, field

import httpx

from worker.config import OpenRouterSettings

RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})


def is_transient(exc: BaseException) -> bool:
    """A transport failure worth another attempt (not, e.g., a malformed URL)."""
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Attempts, deadline and waits for one request (see the module docstring)."""

    max_attempts: int = 5
    deadline: float = 120.0  # seconds for the whole request: every attempt, wait and byte
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    retry_after_max: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: OpenRouterSettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            deadline=settings.request_deadline,
            backoff_initial=settings.backoff_initial,
            backoff_max=settings.backoff_max,
            retry_after_max=settings.retry_after_max,
        )

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        base = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        # "Equal jitter": at least half the backoff, so waits still grow, never in lockstep.
        return min(self.backoff_max, base / 2 + self.rng.uniform(0, base / 2))

    def gives_up(
        self,
        attempt: int,
        elapsed: float,
        next_wait: float,
        *,
        limited_for: float | None = None,
        window: float | None = None,
    ) -> bool:
        """Stop after ``attempt`` attempts, or rather than sleep past the deadline.

        A paced request that OpenRouter still rate limits (429: someone else spent the window,
        another tool on the account or another host's clock) first waits out its pace's
        ``window``: it gives up on the attempts only once ``limited_for`` seconds have passed
        since its first 429 that are at least the window. The deadline still holds."""
        if elapsed + next_wait >= self.deadline:
            return True
        if limited_for is not None and window is not None and limited_for < window:
            return False
        return attempt >= self.max_attempts
