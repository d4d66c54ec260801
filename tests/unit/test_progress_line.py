"""The progress line's drawing: throttled redraws, and log lines that never land after it."""

from __future__ import annotations

import io

from worker.commands.progress import CLEAR, ProgressLine, describe, duration
from worker.sync.summary import Progress


def snapshot(step: str = "keys", done: int = 1, total: int = 4, **figures: float) -> Progress:
    values: dict[str, float] = {
        "rows": 12_345,
        "requests": 1_234,
        "rate_limit_seconds": 0,
        "elapsed": 75,
        "step_elapsed": 10,
    }
    values.update(figures)
    return Progress(
        step=step,
        done=done,
        total=total,
        rows=int(values["rows"]),
        requests=int(values["requests"]),
        rate_limit_seconds=values["rate_limit_seconds"],
        elapsed=values["elapsed"],
        step_elapsed=values["step_elapsed"],
    )


def test_the_line_says_where_the_run_is() -> None:
    assert describe(snapshot(), "sync") == (
        "sync: keys 1/4 · 12,345 rows · 1,234 requests · 1:15 elapsed · ETA 0:30"
    )
    waited = describe(snapshot("history", 0, 2_001, rate_limit_seconds=3_725), "backfill")
    assert waited == (
        "backfill: history 0/2,001 · 12,345 rows · 1,234 requests · rate-limited 1:02:05 · "
        "1:15 elapsed · ETA -"
    )
    assert duration(59.9) == "0:59"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_redraws_are_throttled_but_each_step_starts_and_ends_on_screen() -> None:
    out, clock = io.StringIO(), Clock()
    line = ProgressLine(out, "sync", clock=clock)
    for done in range(5):  # within 0.1 s: only the first and the last are drawn
        line(snapshot(done=done))
        clock.now += 0.01
    line(snapshot("history", 0, 2))
    clock.now += 0.2
    line(snapshot("history", 1, 2))
    draws = [d for d in out.getvalue().split(CLEAR) if d]
    assert [d.split(" · ")[0] for d in draws] == [
        "sync: keys 0/4",
        "sync: keys 4/4",
        "sync: history 0/2",
        "sync: history 1/2",
    ]
    line.clear()
    assert out.getvalue().endswith(CLEAR)


def test_a_log_line_erases_the_progress_line_first() -> None:
    out = io.StringIO()
    line = ProgressLine(out, "sync")
    line(snapshot(done=0))
    line.stream.write("a log line\n")
    line.stream.write("another\n")  # nothing left to erase
    line.clear()  # nothing drawn since
    assert (
        out.getvalue() == f"{CLEAR}{describe(snapshot(done=0), 'sync')}{CLEAR}a log line\nanother\n"
    )


def test_a_terminal_that_went_away_does_not_stop_the_run() -> None:
    out = io.StringIO()
    line = ProgressLine(out, "sync")
    out.close()
    line(snapshot())  # no exception: the sync goes on without its line
    line.clear()
