"""What a run did: the run's summary, the tallies of its steps, and how far a running one
has got (the progress the command line draws).

The sync builds them, the ledger records each key's :class:`~worker.core.outcomes.KeyOutcome`,
the commands print them and the daemon logs them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.core.outcomes import KeyOutcome
from worker.core.usage import WriteCounts


@dataclass(slots=True)
class CatalogueTally:
    """What a run did with the keys of its accounts (see :mod:`worker.sync.catalogue`)."""

    listed: int = 0  # keys the accounts' /keys listed
    fetched: int = 0  # keys whose history was fetched and stored
    unchanged: int = 0  # listed keys left alone: nothing can have changed
    failed: int = 0
    linked: int = 0  # registered ordinary keys found in a catalogue this run
    requests: int = 0
    counts: WriteCounts = field(default_factory=WriteCounts)

    def count(self, requests: int, counts: WriteCounts, *, failed: bool) -> None:
        self.requests += requests
        if failed:
            self.failed += 1
        else:
            self.fetched += 1
            self.counts = self.counts + counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "fetched": self.fetched,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "linked": self.linked,
            "requests": self.requests,
            "rows": self.counts.as_dict(),
        }


@dataclass(slots=True)
class HistoryTally:
    """What a run imported of the year of history (``/analytics/query``)."""

    accounts: int = 0  # accounts whose import made progress
    keys: int = 0  # keys whose import made progress
    pending: int = 0  # accounts and keys whose import is not complete yet
    unknown: list[str] = field(default_factory=list)  # keys analytics no longer knows
    requests: int = 0
    rate_limit_seconds: float = 0.0
    counts: WriteCounts = field(default_factory=WriteCounts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accounts": self.accounts,
            "keys": self.keys,
            "pending": self.pending,
            "unknown_keys": list(self.unknown),
            "requests": self.requests,
            "rate_limit_seconds": round(self.rate_limit_seconds, 3),
            "rows": self.counts.as_dict(),
        }


@dataclass(slots=True)
class RunSummary:
    """What a run did: the command prints it, the daemon logs it."""

    run_id: int
    trigger: str
    status: str  # ok | failed | interrupted
    days: list[dt.date]
    keys: list[KeyOutcome] = field(default_factory=list)
    keys_skipped: int = 0  # not started because the run was stopped
    stopped: str | None = None  # why the run stopped writing before its end (the lock lost)
    catalogue: CatalogueTally = field(default_factory=CatalogueTally)
    history: HistoryTally = field(default_factory=HistoryTally)

    @property
    def keys_ok(self) -> int:
        return sum(1 for k in self.keys if k.status == "ok")

    @property
    def keys_failed(self) -> int:
        return sum(1 for k in self.keys if k.status == "failed")

    @property
    def counts(self) -> WriteCounts:
        total = WriteCounts()
        for outcome in self.keys:
            total = total + outcome.counts
        return total

    @property
    def requests(self) -> int:
        """Every HTTP request of the run: the registered keys', their accounts' other keys'
        and the history's."""
        own = sum(k.http_requests for k in self.keys)
        return own + self.catalogue.requests + self.history.requests

    @property
    def failed(self) -> list[KeyOutcome]:
        return [k for k in self.keys if k.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        """A stable, JSON-ready description (the ``--json`` output)."""
        return {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "status": self.status,
            "days": {
                "first": self.days[0].isoformat() if self.days else None,
                "last": self.days[-1].isoformat() if self.days else None,
                "count": len(self.days),
            },
            "keys_ok": self.keys_ok,
            "keys_failed": self.keys_failed,
            "keys_skipped": self.keys_skipped,
            "stopped": self.stopped,
            "rows": self.counts.as_dict(),
            "requests": self.requests,
            "account_keys": self.catalogue.as_dict(),
            "history": self.history.as_dict(),
            "results": [k.as_dict() for k in self.keys],
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running sync has got: what ``run_sync(progress=…)`` is handed after each
    step of the work (a group of answers stored, an analytics answer stored), in the run's
    writing thread. The command line draws it; the library never prints."""

    step: str  # "keys" (registered keys), "account keys" (their accounts' keys), "history"
    done: int  # subjects of this step finished (keys; for the history, accounts and keys)
    total: int  # subjects of this step
    rows: int  # rows the run has written so far (inserted, updated or deleted)
    requests: int  # HTTP requests the run has sent so far, retries included
    rate_limit_seconds: float  # seconds the run has waited on OpenRouter's rate limits
    elapsed: float  # seconds since the run started
    step_elapsed: float  # seconds since this step started (with done/total: an ETA)


ProgressCallback = Callable[[Progress], None]


class _Counters(Protocol):
    """What progress reads of the run's HTTP transport (:mod:`worker.openrouter.transport`)."""

    requests_made: int
    rate_limit_seconds: float


class ProgressTracker:
    """Builds a run's :class:`Progress` snapshots for ``callback`` (which may be None: then
    nothing is built). Called by the run's steps as ``tracker(step, done, total)``."""

    def __init__(
        self, callback: ProgressCallback | None, summary: RunSummary, http: _Counters
    ) -> None:
        self.callback = callback
        self.summary = summary
        self.http = http
        # The client may have served earlier runs: this run's figures are the differences.
        self.before = (http.requests_made, http.rate_limit_seconds)
        self.started = time.monotonic()
        self.step = ("", self.started)  # the step being reported, and when it started

    def __call__(
        self, step: str, done: int, total: int, pending: WriteCounts | None = None
    ) -> None:
        """``pending``: rows stored that the summary does not count yet (a history import)."""
        if self.callback is None:
            return
        now = time.monotonic()
        if step != self.step[0]:
            self.step = (step, now)
        s = self.summary
        rows = s.counts + s.catalogue.counts + s.history.counts + (pending or WriteCounts())
        self.callback(
            Progress(
                step=step,
                done=done,
                total=total,
                rows=rows.written,
                requests=self.http.requests_made - self.before[0],
                rate_limit_seconds=self.http.rate_limit_seconds - self.before[1],
                elapsed=now - self.started,
                step_elapsed=now - self.step[1],
            )
        )
