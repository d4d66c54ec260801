"""A year of history from ``/analytics/query``, the account's and each of its keys'.

``/activity`` covers 30 days, so a new install would start with 30. The first successful sync
of an account imports ``[sync] history_days`` (default 365) before that window the same way,
newest first, and records how far it has come after every answer it stores: an import cut
short (a stop, an error, a rate limit that does not let up) resumes there at the next run.
Both report their progress after every answer stored, through an optional
``on_progress(subjects finished, rows written)`` (counting from their own start), for the
command line's live progress line.

OpenRouter's limits hold by construction: every request waits its turn at the account's 64-a-
minute budget, which every process counts in the database (:mod:`worker.store.budget`), so a
backfill right after a sync waits instead of collecting 429s; 429, 408 and 5xx are retried (a
429 until the budget's minute has passed), and an answer marked ``truncated`` is never stored:
its range is split in two and asked again. Rows are
stored with source ``analytics``; a day that holds ``/activity`` rows keeps them (an answer
from ``/activity`` is finer and is never overwritten by analytics).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from worker.core.days import completed_window, span, utc_now
from worker.core.errors import OpenRouterError, TooManyRowsError
from worker.core.logs import get_logger
from worker.core.outcomes import KeyOutcome, describe_failure
from worker.core.usage import UsageRow, WriteCounts
from worker.openrouter import OpenRouterClient
from worker.openrouter.pacing import Pace
from worker.store import catalogue as catalogue_store
from worker.store import keys as key_store
from worker.store import ledger
from worker.store.budget import AnalyticsBudget
from worker.store.catalogue import Entry
from worker.store.db import transaction
from worker.store.keys import ActiveKey
from worker.store.locking import LockLostError
from worker.store.models import SOURCE_ACTIVITY, SOURCE_ANALYTICS
from worker.store.usage_write import (
    KEY_USAGE_STATS,
    USAGE_STATS,
    KeyRows,
    UsageTable,
    write_usage,
)
from worker.sync.summary import HistoryTally, RunSummary

log = get_logger("worker.history")

# (subjects finished, rows written) so far: see the module docstring.
OnProgress = Callable[[int, WriteCounts], None]
StepProgress = Callable[[int, int, WriteCounts], None]  # done, total, rows written


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose history to import: an account (``key_hash`` None) or one of its keys."""

    label: str  # for the logs: "account 3" or "account 3 key 1a2b3c4d"
    table: UsageTable
    owner_id: int
    key_hash: str | None
    reached: dt.date | None  # the oldest day imported so far
    record: Callable[[Session, dt.date, dt.datetime | None], None]


def account_subject(account: ActiveKey) -> Subject:
    return Subject(
        f"account {account.id}",
        USAGE_STATS,
        account.id,
        None,
        account.history_reached,
        lambda session, reached, done: key_store.record_history(session, account.id, reached, done),
    )


def subjects_of(account: ActiveKey, entries: Sequence[Entry]) -> list[Subject]:
    """An account's history subjects: the account itself, then each of its keys."""
    keys = [key_subject(entry) for entry in entries if entry.account_id == account.id]
    return [account_subject(account), *keys]


def key_subject(entry: Entry) -> Subject:
    owner = entry.registered_key_id or entry.id
    table = USAGE_STATS if entry.registered_key_id else KEY_USAGE_STATS
    return Subject(
        f"account {entry.account_id} key {entry.hash[:8]}",
        table,
        owner,
        entry.hash,
        entry.history_reached,
        lambda session, reached, done: catalogue_store.record_history(
            session, entry.id, reached, done
        ),
    )


class Importer:
    """Imports histories for one run; ``tally`` says what it did."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        client: OpenRouterClient,
        *,
        today: dt.date,
        history_days: int,
        stop: threading.Event,
        on_progress: OnProgress | None = None,
    ) -> None:
        self.factory = factory
        self.client = client
        self.first = today - dt.timedelta(days=history_days)
        self.last = completed_window(today)[0] - dt.timedelta(days=1)  # before /activity's
        self.stop = stop
        self.tally = HistoryTally()
        self.finished = 0  # subjects done with, imported or not (for on_progress)
        self.on_progress = on_progress
        self._pace: Pace | None = None

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.finished, self.tally.counts)

    def run(self, secret: str, subjects: Sequence[Subject], pace: Pace | None = None) -> None:
        """Import each subject's missing days (newest first), until done or stopped; every
        request waits its turn at ``pace`` (the account's budget)."""
        self._pace = pace
        for subject in subjects:
            self._subject(secret, subject)
            self.finished += 1
            self._progress()

    def _subject(self, secret: str, subject: Subject) -> None:
        """Import one subject's missing days, or count it pending (stopped) or failed."""
        if self.stop.is_set():
            self.tally.pending += 1
            return
        newest = (subject.reached or self.last + dt.timedelta(days=1)) - dt.timedelta(days=1)
        if newest < self.first:
            return  # complete
        try:
            complete = self._range(secret, subject, self.first, newest)
        except LockLostError:
            raise
        except (OpenRouterError, TooManyRowsError) as exc:
            reason, message = describe_failure(exc)
            log.warning(
                "history_import_paused", subject=subject.label, reason=reason, error=message
            )
            complete = False
        self.tally.pending += not complete
        if subject.key_hash is None:
            self.tally.accounts += 1
        else:
            self.tally.keys += 1

    def _range(self, secret: str, subject: Subject, first: dt.date, last: dt.date) -> bool:
        """Import ``first`` … ``last``, newest part first; True when all of it is stored."""
        if self.stop.is_set():
            return False
        answer = self.client.analytics(
            secret, first, last, key_hash=subject.key_hash, pace=self._pace
        )
        if answer.warnings:
            # An unknown key hash (a deleted key): nothing to import, now or later.
            log.warning("history_key_unknown", subject=subject.label, warnings=answer.warnings)
            self.tally.unknown.append(subject.label)
            with transaction(self.factory) as session:
                subject.record(session, self.first, utc_now())
            return True
        if answer.truncated:
            older, newer = _halves(first, last)
            return self._range(secret, subject, *newer) and self._range(secret, subject, *older)
        self._store(subject, answer.rows, first, last)
        return True

    def _store(self, subject: Subject, rows: list[UsageRow], first: dt.date, last: dt.date) -> None:
        with transaction(self.factory) as session:
            counts = _write(session, subject, rows, first, last)
            done = utc_now() if first <= self.first else None
            subject.record(session, first, done)
        self.tally.counts = self.tally.counts + counts
        self._progress()
        log.info(
            "history_chunk",
            subject=subject.label,
            first_day=str(first),
            last_day=str(last),
            rows=len(rows),
            inserted=counts.inserted,
        )


def gap_days(
    previous_success: dt.datetime | None, today: dt.date, history_days: int
) -> list[dt.date]:
    """The days no answer covered because no sync succeeded for longer than ``/activity``'s
    window: from the day of the previous success (not complete then) to the day before the
    current window, no further back than ``history_days``. Empty in the usual case."""
    if previous_success is None:
        return []  # the first sync: the import of history covers what came before
    first = max(previous_success.date(), today - dt.timedelta(days=history_days))
    return span(first, completed_window(today)[0] - dt.timedelta(days=1))


def _write(
    session: Session, subject: Subject, rows: list[UsageRow], first: dt.date, last: dt.date
) -> WriteCounts:
    """An analytics answer for ``first`` … ``last`` replaces the subject's rows of those days,
    except on days that hold ``/activity`` rows (finer; never overwritten by analytics)."""
    write = KeyRows(
        subject.owner_id, rows, frozenset(span(first, last)), keep_source=SOURCE_ACTIVITY
    )
    (counts,) = write_usage(session, [write], table=subject.table, source=SOURCE_ANALYTICS)
    assert isinstance(counts, WriteCounts)  # no delete limit was asked for
    return counts


def backfill_days(
    factory: sessionmaker[Session],
    client: OpenRouterClient,
    secret: str,
    subjects: Sequence[Subject],
    days: Sequence[dt.date],
    on_progress: OnProgress | None = None,
    pace: Pace | None = None,
) -> WriteCounts:
    """Replace the given days (older than ``/activity``'s window) with analytics' answers,
    each contiguous range in one query (split if truncated). Days holding ``/activity`` rows
    keep them. Every request waits its turn at ``pace`` (the account's budget)."""
    total = WriteCounts()
    ranges = _ranges(sorted(days))
    for index, (first, last) in enumerate(ranges, 1):
        for finished, subject in enumerate(subjects, 1):
            for rows, lo, hi in answers(client, secret, subject, first, last, pace):
                with transaction(factory) as session:
                    total = total + _write(session, subject, rows, lo, hi)
            if on_progress is not None:
                # A subject is finished with its last range (a backfill's days are one range).
                on_progress(finished if index == len(ranges) else 0, total)
    return total


def answers(
    client: OpenRouterClient,
    secret: str,
    subject: Subject,
    first: dt.date,
    last: dt.date,
    pace: Pace | None = None,
) -> list[tuple[list[UsageRow], dt.date, dt.date]]:
    """Analytics' rows for ``first`` … ``last`` as (rows, first, last) parts: a truncated
    answer is asked again in halves; an unknown key hash answers nothing."""
    answer = client.analytics(secret, first, last, key_hash=subject.key_hash, pace=pace)
    if answer.warnings:
        log.warning("history_key_unknown", subject=subject.label, warnings=answer.warnings)
        return []
    if not answer.truncated:
        return [(answer.rows, first, last)]
    older, newer = _halves(first, last)
    return [
        *answers(client, secret, subject, *older, pace),
        *answers(client, secret, subject, *newer, pace),
    ]


def _halves(
    first: dt.date, last: dt.date
) -> tuple[tuple[dt.date, dt.date], tuple[dt.date, dt.date]]:
    """A truncated answer's days, split to be asked again: (older half, newer half). One day
    alone cannot be split."""
    if first == last:
        raise TooManyRowsError(f"{first} alone has more rows than an analytics answer holds")
    middle = first + (last - first) // 2
    return (first, middle), (middle + dt.timedelta(days=1), last)


def _ranges(days: Sequence[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Sorted days as contiguous (first, last) ranges."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if ranges and ranges[-1][1] + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


# --- the run's history step (worker.sync.run) ---------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """One account of the step: its management key, decrypted for the run (never logged), its
    subjects and its analytics budget."""

    account: ActiveKey
    secret: str = field(repr=False)
    subjects: list[Subject]
    pace: Pace


def run_step(
    factory: sessionmaker[Session],
    client: OpenRouterClient,
    summary: RunSummary,
    accounts: Mapping[int, tuple[ActiveKey, str]],
    entries: Sequence[Entry],
    older: Sequence[dt.date],
    today: dt.date,
    *,
    history_days: int,
    whole_window: bool,
    stop: threading.Event,
    report: StepProgress | None = None,
) -> None:
    """A run's last step, per account (its management key decrypted in ``accounts``): a
    backfill's ``older`` days, or the history not imported yet and any days lost between two
    windows. What it did goes to ``summary.history`` (its requests and rate-limit waits
    measured once, over the whole step); an account whose days could not be asked fails in the
    ledger. ``report(subjects done, subjects in all, rows written)`` follows the backfill or the
    import (not a gap fill, which is rare and short)."""
    plans = [
        _Plan(account, secret, subjects_of(account, entries), AnalyticsBudget(factory, account.id))
        for account, secret in accounts.values()
    ]
    total = sum(len(plan.subjects) for plan in plans)  # accounts and keys alike
    before = 0  # the subjects of the accounts done already (a backfill counts from each start)

    def progress(done: int, rows: WriteCounts) -> None:
        # The importer counts from its own start; a backfill from each account's.
        if report is not None and older:
            report(before + done, total, tally.counts + rows)
        elif report is not None:
            report(done, total, rows)

    importer = Importer(
        factory, client, today=today, history_days=history_days, stop=stop, on_progress=progress
    )
    tally = importer.tally
    if report is not None and (older or (whole_window and history_days)):
        report(0, total, WriteCounts())
    sent = client.http.requests_made, client.http.rate_limit_seconds
    try:
        for plan in plans:
            if older:
                _backfill(factory, client, summary, tally, plan, older, progress)
            elif whole_window and history_days:
                importer.run(plan.secret, plan.subjects, plan.pace)
                with factory() as session:
                    previous = ledger.last_success(session, plan.account.id, summary.run_id)
                gap = gap_days(previous, today, history_days)
                if gap and not stop.is_set():
                    log.warning("history_gap", api_key_id=plan.account.id,
                                first_day=str(gap[0]), days=len(gap))  # fmt: skip
                    _backfill(factory, client, summary, tally, plan, gap)
            before += len(plan.subjects)
    finally:
        tally.requests = client.http.requests_made - sent[0]
        tally.rate_limit_seconds = client.http.rate_limit_seconds - sent[1]
        summary.history = tally


def _backfill(
    factory: sessionmaker[Session],
    client: OpenRouterClient,
    summary: RunSummary,
    tally: HistoryTally,
    plan: _Plan,
    days: Sequence[dt.date],
    on_progress: OnProgress | None = None,
) -> None:
    """Replace ``days`` of the plan's subjects; a failure fails the account in the ledger."""
    try:
        counts = backfill_days(
            factory, client, plan.secret, plan.subjects, days, on_progress, plan.pace
        )
        tally.counts = tally.counts + counts
    except (OpenRouterError, TooManyRowsError) as exc:
        reason, message = describe_failure(exc)
        account = plan.account
        outcome = KeyOutcome(
            account.id, account.user_id, account.name, "failed", reason=reason, error=message
        )
        with transaction(factory) as session:
            ledger.record_outcomes(session, summary.run_id, [outcome])
        summary.keys.append(outcome)
