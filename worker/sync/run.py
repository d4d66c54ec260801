"""The sync: fetch → validate → sum → store, for every registered key, every key of their
accounts, and a year of history; each subject whole or absent.

:func:`run_sync` is one run (``sync``, ``backfill`` or a scheduled one); orchestration only:
the fetching is :mod:`worker.sync.fetch`, the writing :mod:`worker.sync.writes`, the SQL
:mod:`worker.store`, the HTTP :mod:`worker.openrouter`. A run has four steps:

1. **Registered keys.** Each management key's window (one request), or the days of a backfill
   (one each), and its account's keys (``/workspaces``, ``/keys`` pages). Fetched
   ``[sync] concurrency`` at a time on a thread pool; written in this thread as they arrive,
   those that arrive together in one short transaction (a group commit). The network is never
   called with a transaction open.
2. **Registered ordinary keys.** They cannot read ``/activity`` (a key found to answer 403 is
   one): each is linked to its catalogue entry (:mod:`worker.sync.catalogue`), or reported once as
   ``needs_management_key`` (a warning, not a failure).
3. **Every key of the accounts.** The keys whose history can have changed (a backfill: all of
   them), fetched through their account's management key, on the same pool.
4. **A year of history** (:mod:`worker.sync.history`): the part not imported yet, or a backfill's
   days older than the window.

A subject that fails is rolled back whole, recorded and logged; the others go on. The run ends
``ok``, ``failed`` or ``interrupted`` (``stop`` set, or the sync lock lost) with one
``sync_finished`` line. Collaborators are arguments, so tests need no monkeypatching.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.core.days import check_days, split_days, utc_today, window_days
from worker.core.errors import (
    DatabaseBusyError,
    NotFoundError,
    NotManagementKeyError,
)
from worker.core.logs import bound_contextvars, get_logger
from worker.core.usage import WriteCounts
from worker.openrouter import OpenRouterClient
from worker.store import catalogue as catalogue_store
from worker.store import keys as key_store
from worker.store import ledger
from worker.store.db import make_session_factory, transaction
from worker.store.keys import ActiveKey
from worker.store.locking import Fence, LockLostError, sync_lock
from worker.sync import catalogue, history
from worker.sync.fetch import Fetched, fetch_catalogued, fetch_registered, is_ordinary
from worker.sync.summary import ProgressCallback, ProgressTracker, RunSummary
from worker.sync.writes import store
from worker.vault.crypto import Keyring

log = get_logger("worker.sync")  # the name its lines have always had

T = TypeVar("T")


def run_sync(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    *,
    trigger: str = "sync",
    days: Sequence[dt.date] | None = None,
    key_ids: Iterable[int] | None = None,
    client: OpenRouterClient | None = None,
    stop: threading.Event | None = None,
    progress: ProgressCallback | None = None,
    instance: str | None = None,
) -> RunSummary:
    """Run one sync over every active key (or ``key_ids``); returns what happened.

    ``days=None`` fetches OpenRouter's whole window in one request per subject and then any
    history not imported yet. A list of ``days`` (a backfill) writes only those days: inside
    the window from ``/activity``, older ones (up to a year back) from ``/analytics/query``.
    Raises :class:`~worker.core.errors.UsageError` for a day OpenRouter cannot report and
    :class:`NotFoundError` for an unknown or inactive id in ``key_ids``, before anything is
    fetched or recorded. ``client`` defaults to one built from the settings, closed at the end.
    ``progress`` is handed a :class:`~worker.core.outcomes.Progress` whenever the work advances.
    ``instance``: the daemon running it, for the ledger.
    """
    today = utc_today()
    run_days = window_days(today) if days is None else check_days(days, today)
    in_window, older = (run_days, []) if days is None else split_days(run_days, today)
    wanted = None if key_ids is None else sorted(set(key_ids))
    stop = stop or threading.Event()
    started = time.monotonic()

    with transaction(session_factory) as session:
        keys = key_store.active_keys(session, wanted)
        if wanted is not None:
            missing = sorted(set(wanted) - {k.id for k in keys})
            if missing:
                raise NotFoundError(
                    f"no active API key with id {', '.join(map(str, missing))}: "
                    "see `openrouter-watcher keys list`"
                )
        run_id = ledger.start_run(session, trigger, instance=instance)

    summary = RunSummary(run_id=run_id, trigger=trigger, status="running", days=run_days)
    own_client = client is None
    if client is None:
        client = OpenRouterClient(settings.openrouter)
    tracker = ProgressTracker(progress, summary, client.http)
    run = _Run(session_factory, settings, keyring, client, summary, stop, days is None, tracker)
    with bound_contextvars(run_id=run_id):
        log.info(
            "sync_started",
            trigger=trigger,
            keys=len(keys),
            first_day=str(run_days[0]),
            last_day=str(run_days[-1]),
            days=len(run_days),
        )
        status = "interrupted"
        try:
            run.all(keys, in_window, older, today)
            if run.complete and not summary.keys_skipped and not summary.stopped:
                failed = summary.keys_failed or summary.catalogue.failed
                status = "failed" if failed else "ok"
        except LockLostError as exc:
            summary.stopped = str(exc)
            summary.keys_skipped = max(summary.keys_skipped, len(keys) - len(summary.keys))
            log.error("sync_lock_lost", error=summary.stopped)
        except DatabaseBusyError as exc:
            # Another process holds SQLite's write lock past busy_timeout: stop writing, and
            # say so in the summary rather than lose it to a one-line error.
            summary.stopped = str(exc)
            log.error("sync_database_busy", error=summary.stopped)
        finally:
            if own_client:
                client.close()
            # Also on KeyboardInterrupt or a database outage: never leave the run "running".
            summary.status = status
            summary.keys.sort(key=lambda outcome: outcome.api_key_id)
            _close_run(session_factory, summary)
            log.info(
                "sync_finished",
                trigger=trigger,
                status=status,
                keys_ok=summary.keys_ok,
                keys_failed=summary.keys_failed,
                keys_skipped=summary.keys_skipped,
                **{f"rows_{k}": v for k, v in summary.counts.as_dict().items()},
                account_keys=summary.catalogue.as_dict(),
                history=summary.history.as_dict(),
                requests=summary.requests,
                duration_s=round(time.monotonic() - started, 3),
            )
    return summary


class _Run:
    """The steps of one run (see the module docstring), sharing its pool settings."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        keyring: Keyring,
        client: OpenRouterClient,
        summary: RunSummary,
        stop: threading.Event,
        whole_window: bool,
        report: ProgressTracker,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.keyring = keyring
        self.client = client
        self.summary = summary
        self.stop = stop
        self.whole_window = whole_window
        self.report = report
        # Every step ran to its end: a stop that left account keys or history for the next run
        # makes the run "interrupted", like one that left registered keys.
        self.complete = False

    def all(
        self,
        keys: list[ActiveKey],
        in_window: list[dt.date],
        older: list[dt.date],
        today: dt.date,
    ) -> None:
        sync = self.settings.sync
        ordinary = [key for key in keys if is_ordinary(key)]
        registered = [key for key in keys if not is_ordinary(key)]
        fetched: list[Fetched] = []
        if in_window:
            fetch_key = functools.partial(
                fetch_registered, client=self.client, keyring=self.keyring, settings=sync,
                run_days=in_window, whole_window=self.whole_window, run_id=self.summary.run_id,
            )  # fmt: skip

            def keep(done: Fetched) -> None:
                # What the later steps read (listing, error, requests), not the rows: a run of
                # thousands of keys would otherwise hold every key's answer until its end.
                fetched.append(dataclasses.replace(done, write=None))

            self.summary.keys_skipped = self._pool("keys", registered, fetch_key, keep)
        # A key that turned out ordinary (403) is linked below, not failed.
        refused = [f for f in fetched if _refused(f)]
        ordinary += [f.subject for f in refused]  # type: ignore[misc]
        accounts = self._accounts(registered, fetched)
        catalogue.link_ordinary(
            self.factory, self.client, self.keyring, self.summary, ordinary,
            {f.subject.id: f.requests for f in refused},  # type: ignore[union-attr]
        )  # fmt: skip
        if self.stop.is_set() or self.summary.keys_skipped:
            return
        with self.factory() as session:
            entries = catalogue_store.entries(session, accounts)
            shared = catalogue_store.shared_accounts(session, among=accounts)
            linked = {key.id: key for key in ordinary}
        for pair in shared:  # kept, never merged on a guess: the operator decides which goes
            ids = [pair.first_key_id, pair.second_key_id]
            log.warning(
                "management_keys_share_an_account", api_key_ids=ids, shared_keys=pair.shared_keys
            )
        listings = {f.subject.id: f.listing for f in fetched if f.listing is not None}  # type: ignore[union-attr]
        self.summary.catalogue.listed = sum(len(listing) for listing in listings.values())
        left = 0  # account keys whose fetch a stop left for the next run
        if in_window:
            jobs, unchanged = catalogue.jobs_for(
                entries,
                listings,
                accounts,
                linked,
                today=today,
                refresh_days=sync.key_refresh_days,
                force=not self.whole_window,
            )
            self.summary.catalogue.unchanged = unchanged
            fetch_job = functools.partial(
                fetch_catalogued, client=self.client, settings=sync, run_days=in_window,
                whole_window=self.whole_window, run_id=self.summary.run_id,
            )  # fmt: skip
            left = self._pool("account keys", jobs, fetch_job, lambda _fetched: None)

        def report_history(done: int, total: int, rows: WriteCounts) -> None:
            self.report("history", done, total, rows)

        history.run_step(
            self.factory,
            self.client,
            self.summary,
            accounts,
            entries,
            older,
            today,
            history_days=sync.history_days,
            whole_window=self.whole_window,
            stop=self.stop,
            report=report_history,
        )
        self.complete = not (self.stop.is_set() and (left or self.summary.history.pending))

    def _pool(
        self,
        step: str,
        items: Sequence[T],
        fetch: Callable[[T], Fetched],
        seen: Callable[[Fetched], None],
    ) -> int:
        """Fetch ``items`` on the pool and store them here as they arrive; returns how many
        were not started because ``stop`` was set.

        Up to twice ``concurrency`` items are submitted at a time, so the threads always have
        the next one while this thread writes (a fetch that waited for its write made a
        latency-bound sync at concurrency 32 take 1.8 times its ideal). An item whose turn
        comes after ``stop`` was set is not fetched: it is left for the next run.
        """
        if not items:
            return 0
        self.report(step, 0, len(items))
        concurrency = max(1, min(self.settings.sync.concurrency, len(items)))
        leaving = threading.Event()  # this thread is leaving early: fetch no more

        def task(item: T) -> Fetched | None:
            return None if self.stop.is_set() or leaving.is_set() else fetch(item)

        pending = iter(items)
        done_count = 0
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sync-fetch") as pool:
            in_flight: set[Future[Fetched | None]] = set()
            try:
                while True:
                    while not self.stop.is_set() and len(in_flight) < 2 * concurrency:
                        item = next(pending, None)
                        if item is None:
                            break
                        in_flight.add(pool.submit(task, item))
                    if not in_flight:
                        break
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    results = [r for r in (future.result() for future in done) if r is not None]
                    done_count += len(results)
                    for result in results:
                        seen(result)
                    store(self.factory, self.summary, [r for r in results if not _refused(r)])
                    self.report(step, done_count, len(items))
            finally:
                # Leaving early (an interrupt, a lost database): the fetches in flight finish,
                # the queued ones see ``stop`` or are cancelled; no thread outlives the run.
                leaving.set()
                pool.shutdown(wait=True, cancel_futures=True)
        return len(items) - done_count

    def _accounts(
        self, registered: list[ActiveKey], fetched: list[Fetched]
    ) -> dict[int, tuple[ActiveKey, str]]:
        """The accounts whose catalogue this run can read: management keys that answered,
        with their key decrypted for the run (held in memory only)."""
        answered = {f.subject.id for f in fetched if f.listing is not None}  # type: ignore[union-attr]
        if not self.whole_window and not fetched:
            answered = {key.id for key in registered if key.kind is not None}
        accounts = {}
        for key in registered:
            if key.id in answered:
                secret = self.keyring.decrypt(key.key_encrypted, user_id=key.user_id, key_id=key.id)
                accounts[key.id] = (key, secret)
        return accounts


def _refused(fetched: Fetched) -> bool:
    """/activity refused the key (403): an ordinary key, linked rather than failed."""
    return isinstance(fetched.error, NotManagementKeyError)


def locked_sync(
    engine: Engine,
    settings: Settings,
    keyring: Keyring,
    *,
    trigger: str,
    fences: Sequence[Fence] = (),
    **kwargs: Any,
) -> RunSummary | None:
    """:func:`run_sync` while holding the database's sync lock; None if another sync holds it.

    Every entry point (the daemon, ``sync``, ``backfill``) goes through here, so two syncs never
    write at the same time on one database, whichever processes start them: every transaction
    of the run first checks that the lock is still held (see :mod:`worker.store.locking`), and
    ``fences`` (the daemon's: that it still leads).
    """
    with sync_lock(engine, heartbeat=settings.ha.heartbeat_seconds, fences=fences) as locked:
        if locked is None:
            log.info(
                "sync_skipped",
                trigger=trigger,
                reason="another sync is running against this database",
            )
            return None
        # Holding the lock proves no other process is syncing: a run still marked
        # "running" was cut short (killed, machine lost) and is marked interrupted.
        with transaction(locked) as session:
            stale = ledger.interrupt_stale_runs(session)
        if stale:
            log.warning("stale_runs_marked_interrupted", run_ids=stale)
        summary = run_sync(locked, settings, keyring, trigger=trigger, **kwargs)
    if summary.stopped:
        # The lock's connection is gone, so its sessions cannot close the run: a new one can
        # (our own run's row only; another sync may hold the lock by now).
        _close_run(make_session_factory(engine), summary)
    return summary


def _close_run(factory: sessionmaker[Session], summary: RunSummary) -> None:
    """Record the run's end in the ledger; a failure here is logged, never raised over the
    error that may have ended the run."""
    try:
        with transaction(factory) as session:
            ledger.finish_run(
                session,
                summary.run_id,
                status=summary.status,
                keys_ok=summary.keys_ok,
                keys_failed=summary.keys_failed,
            )
    except Exception:
        log.exception("sync_run_not_closed")
