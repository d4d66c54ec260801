"""The daemon's pieces that need no database."""

from __future__ import annotations

import random

from worker.scheduler import Backoff


def test_database_backoff_doubles_from_one_second_to_a_jittered_minute() -> None:
    backoff = Backoff()
    rng = random.Random(7)
    for attempt, step in [(1, 1), (2, 2), (3, 4), (4, 8), (6, 32), (7, 60), (8, 60), (500, 60)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered: workers that lost one database spread out
