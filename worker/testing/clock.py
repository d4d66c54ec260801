"""The tests' clock: noon UTC on a day, and the worker's clock pinned there in this process.

Noon is twelve hours from either midnight: a clock that starts there and runs on in real time
stays on its day however slow the machine (a test that means to cross midnight pins an instant
of its own). :func:`noon` is the instant (a ``pin_clock`` start, a client's ``wall_clock``:
``functools.partial(noon, day)``), :func:`noon_iso` the same for a subprocess's
``OPENROUTER_WATCHER_TESTING_CLOCK``, and :class:`PinnedClock` pins the worker's clock in
this process (the tests' ``pinned_clock`` fixture).
"""

from __future__ import annotations

import datetime as dt

from worker.core import days


def noon(day: dt.date) -> dt.datetime:
    """12:00 UTC on ``day``."""
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)


def noon_iso(day: dt.date) -> str:
    """:func:`noon` as ``OPENROUTER_WATCHER_TESTING_CLOCK`` spells it: ``2026-11-20T12:00:00Z``."""
    return noon(day).strftime("%Y-%m-%dT%H:%M:%SZ")


class PinnedClock:
    """The worker's clock (:func:`worker.core.days.utc_now`) pinned in this process.

    Within ``with PinnedClock(day):`` it runs forward in real time from noon UTC on ``day``, or
    from wherever :meth:`at` moves it; at the block's end it is the real clock again.
    """

    def __init__(self, day: dt.date) -> None:
        self.day = day  # the UTC day of the instant pinned last

    def at(self, instant: dt.datetime) -> PinnedClock:
        """Move the clock: it runs on from ``instant`` (timezone-aware)."""
        days.pin_clock(instant)
        self.day = instant.astimezone(dt.UTC).date()
        return self

    def __enter__(self) -> PinnedClock:
        return self.at(noon(self.day))

    def __exit__(self, *_exc: object) -> None:
        days.pin_clock(None)
