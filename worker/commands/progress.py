"""The live progress line of ``sync`` and ``backfill`` on a terminal.

The sync reports :class:`worker.core.outcomes.Progress` snapshots through a callback; this module
draws them as one line on stderr, redrawn in place (carriage return, clear line) at most ten
times a second, and erases it before anything else is written there (a log line, the
summary, an error). Not drawn when stderr is not a terminal (a pipe, a file, the journal) or
with ``--json``, so what programs read never holds it.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    from worker.sync.summary import Progress

CLEAR = "\r\x1b[2K"  # back to the start of the line, then erase all of it
MIN_INTERVAL = 0.1  # seconds between redraws: the counters move faster than anyone reads
DEFAULT_WIDTH = 80


def duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``: elapsed time and ETA, to the second."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def describe(progress: Progress, label: str) -> str:
    """The line's text: ``sync: keys 12/40 · 1,234 rows · 56 requests · 0:03 elapsed · ETA
    0:07``, with ``rate-limited 0:12`` before the elapsed time once OpenRouter's limits made
    the run wait."""
    p = progress
    eta = "-"
    if 0 < p.done < p.total:
        # The current step's pace: steps differ too much (a rate-limited history import
        # against a handful of /activity calls) for the whole run's pace to predict anything.
        eta = duration(p.step_elapsed / p.done * (p.total - p.done))
    elif p.done >= p.total:
        eta = duration(0)
    parts = [
        f"{label}: {p.step} {p.done:,}/{p.total:,}",
        f"{p.rows:,} rows",
        f"{p.requests:,} requests",
    ]
    if p.rate_limit_seconds >= 1:
        parts.append(f"rate-limited {duration(p.rate_limit_seconds)}")
    parts += [f"{duration(p.elapsed)} elapsed", f"ETA {eta}"]
    return " · ".join(parts)


def is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ProgressLine:
    """Draws progress snapshots on ``stream`` (a terminal) as one line redrawn in place.

    :attr:`stream` is what everything else should write to meanwhile (the log handler): it
    erases the line before each write, so a log line never lands after the progress text;
    the next snapshot draws the line again below it. Writes from the fetch threads' log
    lines and the drawing share one lock.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_INTERVAL,
    ) -> None:
        self._out = stream
        self.label = label
        self._clock = clock
        self._min_interval = min_interval
        self._lock = threading.RLock()
        self._drawn = False
        self._last = -min_interval
        self._shown: tuple[str, int] = ("", -1)
        self._broken = False
        # Only write, flush and isatty are asked of it (by logging's StreamHandler).
        self.stream = cast("TextIO", _Erasing(self))

    def __call__(self, progress: Progress) -> None:
        """Draw ``progress``, unless the last redraw was under ``min_interval`` ago (a step's
        first snapshot and its last are drawn anyway: they say where the run is)."""
        now = self._clock()
        shown = (progress.step, progress.done)
        edge = progress.step != self._shown[0] or (
            progress.done >= progress.total and shown != self._shown
        )
        if self._broken or (not edge and now - self._last < self._min_interval):
            return
        text = describe(progress, self.label)
        width = _width(self._out)
        if len(text) >= width:  # a wrapped line could not be redrawn in place
            text = text[: width - 2] + "…"
        with self._lock:
            self._write(CLEAR + text)
            self._drawn = True
            self._last = now
            self._shown = shown

    def clear(self) -> None:
        """Erase the line (before the summary, an error, or a log line)."""
        with self._lock:
            if self._drawn:
                self._drawn = False
                self._write(CLEAR)

    def _write(self, text: str) -> None:
        # A terminal that went away (a closed ssh session) must not fail the sync itself.
        try:
            self._out.write(text)
            self._out.flush()
        except (OSError, ValueError):
            self._broken = True


class _Erasing(io.TextIOBase):
    """``stream`` for the log handler while the line is shown: erases it before each write."""

    def __init__(self, line: ProgressLine) -> None:
        super().__init__()
        self._line = line

    def write(self, text: str) -> int:
        line = self._line
        with line._lock:
            line.clear()
            line._out.write(text)
        return len(text)

    def flush(self) -> None:
        self._line._out.flush()

    def isatty(self) -> bool:
        return is_terminal(self._line._out)

    def fileno(self) -> int:
        return self._line._out.fileno()


def _width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        columns = 0
    return columns or DEFAULT_WIDTH  # a pseudo-terminal nobody sized says 0
