"""The sync: for every active key, fetch → validate → sum → store, each key whole or absent.

:func:`run_sync` is one run (``sync``, ``backfill`` or a scheduled one); orchestration only, the
SQL lives in :mod:`worker.store` and the HTTP in :mod:`worker.openrouter`:

1. open a ``sync_runs`` row and read the keys to poll (one short transaction);
2. fetch ``[sync] concurrency`` keys at a time on a thread pool: decrypt the key, ask
   OpenRouter (one request for the whole window, or one per day for a backfill), validate the
   answer and sum it per (day, model). At most twice that many keys are in flight or waiting
   to be written, so memory grows with the concurrency, not with the number of keys;
3. this thread writes the answers as they arrive: those that arrived together share one short
   transaction (a group commit), each key still whole or absent, since a failed group is
   rolled back and its keys written again one transaction each. The network is never called
   with a transaction open;
4. a key that fails (cannot be decrypted, 401, 403, invalid answer, retries exhausted, a
   database error) is rolled back whole, recorded in the ledger and logged
   (``key_sync_failed``); the others go on;
5. close the run: ``ok``, ``failed`` (some key failed) or ``interrupted`` (``stop`` was set
   before every key had started), and log one ``sync_finished`` line.

Collaborators (session factory, settings, keyring, client) are arguments, so tests need no
monkeypatching.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings, SyncSettings
from worker.crypto import Keyring
from worker.days import check_days, span, utc_now, window_days
from worker.db import make_session_factory, transaction
from worker.errors import (
    InvalidResponseError,
    NotFoundError,
    NotManagementKeyError,
    OpenRouterError,
)
from worker.locking import LockLostError, sync_lock
from worker.logs import bound_contextvars, get_logger
from worker.openrouter import OpenRouterClient, daily_totals
from worker.outcomes import KeyOutcome, RunSummary, describe_failure
from worker.store import keys as key_store
from worker.store import ledger
from worker.store.keys import ActiveKey
from worker.store.usage_write import KeyRows, Withheld, write_usage
from worker.usage import WriteCounts

log = get_logger(__name__)

# A group commit holds at most this many rows: it keeps one write transaction (which blocks
# other SQLite writers) to a fraction of a second.
GROUP_COMMIT_ROWS = 20_000


# --- fetching (on the pool's threads) -------------------------------------------------------


@dataclass(slots=True)
class _Fetched:
    """One key's fetch: what to write, or the error that stopped it."""

    key: ActiveKey
    write: KeyRows | None  # None when the fetch failed
    requests: int
    accepted: bool  # OpenRouter answered 200 at least once
    error: BaseException | None = None
    # A whole-window answer's digest (None for a backfill) and its body's digest;
    # ``unchanged``: the digest of the answer stored last, so nothing was parsed or needs
    # writing.
    digest: str | None = None
    body_digest: str | None = None
    unchanged: bool = False

    @property
    def size(self) -> int:
        return len(self.write.rows) if self.write is not None else 0


def _fetch(
    key: ActiveKey,
    *,
    client: OpenRouterClient,
    keyring: Keyring,
    settings: SyncSettings,
    run_days: Sequence[dt.date],
    whole_window: bool,
    run_id: int,
) -> _Fetched:
    """Decrypt and fetch one key, validate and sum its answer. Never raises.

    A whole-window answer (one request) is the full truth for the days of OpenRouter's window,
    as our clock sees it when the answer arrives (a run may cross midnight). Its rows are
    written for those days; a stored model it no longer reports is deleted only on the days
    the run's window and the answer's share, never before the first day the answer reports
    (a server whose clock turned before ours no longer lists the oldest day), and the whole
    answer is held back if it would delete more than ``[sync] max_delete_fraction`` of the
    key's rows there, until the same answer comes again ``confirm_delete_after_hours`` later.
    A backfill asks for each day with ``date=``; each answer is the full truth for its day.
    """
    with bound_contextvars(run_id=run_id, api_key_id=key.id, user_id=key.user_id):
        requests = 0
        accepted = False
        try:
            secret = keyring.decrypt(key.key_encrypted, user_id=key.user_id, key_id=key.id)
            if whole_window:
                activity = client.get_activity(secret, unless_digest=key.activity_digest)
                del secret
                rows = daily_totals(activity.rows)
                answered = frozenset(span(*activity.window))
                confirmed = _confirms_held_back_answer(key, activity.body_digest, settings)
                write = KeyRows(
                    key.id,
                    rows,
                    answered,
                    delete_days=answered.intersection(run_days),
                    keep_before=None if confirmed else (rows[0].date if rows else dt.date.max),
                    max_delete_fraction=None if confirmed else settings.max_delete_fraction,
                )
                return _Fetched(
                    key,
                    write,
                    activity.requests,
                    True,
                    digest=activity.digest,
                    body_digest=activity.body_digest,
                    unchanged=activity.unchanged,
                )
            answers = []
            for day in run_days:
                answers.append(client.get_activity(secret, day=day))
                requests += answers[-1].requests
                accepted = True
            del secret
            rows = daily_totals(row for answer in answers for row in answer.rows)
            return _Fetched(key, KeyRows(key.id, rows, frozenset(run_days)), requests, accepted)
        except Exception as exc:
            # A failed call's attempts count too (the client sets them on its errors), and an
            # invalid answer was still a 200: the key is a management key.
            requests += exc.requests if isinstance(exc, OpenRouterError) else 0
            accepted = accepted or isinstance(exc, InvalidResponseError)
            return _Fetched(key, None, requests, accepted, error=exc)


def _confirms_held_back_answer(key: ActiveKey, body_digest: str, settings: SyncSettings) -> bool:
    """The answer is the one held back for this key, seen long enough ago: apply it now."""
    since = key.suspicious_since
    return (
        key.suspicious_digest == body_digest
        and since is not None
        and utc_now() - since >= dt.timedelta(hours=settings.confirm_delete_after_hours)
    )


# --- writing (in the calling thread) --------------------------------------------------------


def _store(
    session_factory: sessionmaker[Session], run_id: int, fetched: Sequence[_Fetched]
) -> list[KeyOutcome]:
    """Store the keys whose answers arrived together; record failed fetches.

    Fetched keys share one transaction of at most :data:`GROUP_COMMIT_ROWS` rows: a commit
    and a transaction's set-up cost more than writing a small key's rows, and under a high
    concurrency many answers arrive together. If a group fails it is rolled back whole and its
    keys are written one transaction each, so the failure stays with the key that caused it.
    """
    outcomes: list[KeyOutcome] = []
    group: list[_Fetched] = []
    size = 0
    for item in fetched:
        if item.error is not None:
            outcomes.append(_record_failure(session_factory, run_id, item, item.error))
            continue
        if group and size + item.size > GROUP_COMMIT_ROWS:
            outcomes.extend(_store_group(session_factory, run_id, group))
            group, size = [], 0
        group.append(item)
        size += item.size
    if group:
        outcomes.extend(_store_group(session_factory, run_id, group))
    return outcomes


def _store_group(
    session_factory: sessionmaker[Session],
    run_id: int,
    group: list[_Fetched],
    *,
    first_try: bool = True,
) -> list[KeyOutcome]:
    """One transaction for the group; if it fails, one more for each of its keys (re-reading
    what is stored: a row that appeared since the first read is then updated, not inserted).
    A key that fails again is recorded as failed."""
    try:
        with transaction(session_factory) as session:
            return _write(session, run_id, group)
    except LockLostError:
        raise  # stop writing at once: another sync may be running now
    except Exception as exc:
        if not first_try:
            return [_record_failure(session_factory, run_id, group[0], exc)]
        log.info("group_write_failed", keys=len(group), exc_info=True)
    return [
        outcome
        for item in group
        for outcome in _store_group(session_factory, run_id, [item], first_try=False)
    ]


def _write(session: Session, run_id: int, group: Sequence[_Fetched]) -> list[KeyOutcome]:
    """In the caller's transaction: the keys' rows, their kinds and last uses, their ledger.

    A key whose answer is the one stored last (``unchanged``) writes nothing; the others
    remember their answer's digest (a backfill forgets it: the rows are then other than any
    whole-window answer's). An answer held back (it would delete too much) writes nothing and
    fails its key as ``suspicious_answer``.
    """
    changed = [f for f in group if not f.unchanged and f.write is not None]
    results = dict(
        zip(
            (f.key.id for f in changed),
            write_usage(session, [f.write for f in changed if f.write is not None]),
            strict=True,
        )
    )
    now = utc_now()
    outcomes = []
    for fetched in group:
        result = results.get(fetched.key.id)
        if isinstance(result, Withheld):
            outcomes.append(_withheld(session, fetched, result, now))
            continue
        if result is not None:
            rows = fetched.size if fetched.digest else None
            key_store.remember_answer(session, fetched.key.id, fetched.digest, rows)
        counts = result or WriteCounts(unchanged=fetched.key.activity_rows or 0)
        outcomes.append(_outcome(fetched, "ok", counts))
    key_store.mark_accepted(session, [f.key.id for f in group], now)
    ledger.record_outcomes(session, run_id, outcomes)
    for outcome in outcomes:
        # DEBUG: at INFO, one line per key was a sixth of a small key's CPU time, and the
        # ledger keeps the same figures. Failures stay WARNING lines, the run's totals INFO.
        log.debug(
            "key_synced",
            api_key_id=outcome.api_key_id,
            **{f"rows_{k}": v for k, v in outcome.counts.as_dict().items()},
            requests=outcome.http_requests,
        )
    return outcomes


def _withheld(
    session: Session, fetched: _Fetched, withheld: Withheld, now: dt.datetime
) -> KeyOutcome:
    """A key whose answer was held back: remember the answer and since when, and say why."""
    key = fetched.key
    assert fetched.body_digest is not None  # only whole-window answers are held back
    since = key.suspicious_since if key.suspicious_digest == fetched.body_digest else None
    key_store.hold_back(session, key.id, fetched.body_digest, since or now)
    outcome = _outcome(fetched, "failed")
    outcome.reason = "suspicious_answer"
    outcome.error = (
        f"OpenRouter's answer would delete {withheld.would_delete} of the {withheld.stored} "
        "rows stored for the days it covers (more than [sync] max_delete_fraction): nothing "
        "was written. If that spend is really gone, the same answer is applied when it comes "
        "again [sync] confirm_delete_after_hours later; `backfill --since DAY --until DAY` "
        "applies those days now"
    )
    with bound_contextvars(api_key_id=key.id, user_id=key.user_id):
        log.warning(
            "key_sync_failed",
            reason=outcome.reason,
            error=outcome.error,
            would_delete=withheld.would_delete,
            stored=withheld.stored,
        )
    return outcome


def _outcome(fetched: _Fetched, status: str, counts: WriteCounts | None = None) -> KeyOutcome:
    key = fetched.key
    return KeyOutcome(
        api_key_id=key.id,
        user_id=key.user_id,
        name=key.name,
        status=status,
        counts=counts or WriteCounts(),
        http_requests=fetched.requests,
    )


def _record_failure(
    session_factory: sessionmaker[Session], run_id: int, fetched: _Fetched, error: BaseException
) -> KeyOutcome:
    """Log a key's failure and record it in its own transaction."""
    outcome = _outcome(fetched, "failed")
    outcome.reason, outcome.error = describe_failure(error)
    with bound_contextvars(api_key_id=fetched.key.id, user_id=fetched.key.user_id):
        # The traceback only for the unexpected; an expected failure is its one-line message.
        trace = {"exc_info": error} if outcome.reason == "unexpected" else {}
        log.warning(
            "key_sync_failed",
            reason=outcome.reason,
            error=outcome.error,
            requests=fetched.requests,
            **trace,
        )
        try:
            with transaction(session_factory) as session:
                if isinstance(error, NotManagementKeyError):
                    key_store.mark_ordinary(session, fetched.key.id)
                elif fetched.accepted:
                    key_store.mark_accepted(session, [fetched.key.id], utc_now())
                ledger.record_outcomes(session, run_id, [outcome])
        except LockLostError:
            raise
        except Exception:
            # E.g. the key was deleted meanwhile; the outcome is still reported and logged.
            log.exception("key_result_not_recorded")
    return outcome


# --- the run --------------------------------------------------------------------------------


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
) -> RunSummary:
    """Run one sync over every active key (or ``key_ids``); returns what happened.

    ``days=None`` fetches OpenRouter's whole window in one request per key, and every day of
    the window is written (a day without rows deletes that key's rows for the day). A list of
    ``days`` (a backfill) fetches one request per day with ``date=``, and only those days are
    written. Raises :class:`~worker.errors.UsageError` for a day outside the window and
    :class:`NotFoundError` for an unknown or inactive id in ``key_ids``, before anything is
    fetched or recorded. ``client`` defaults to one built from the settings, closed at the end.
    """
    today = utc_now().date()
    fetch_days = window_days(today) if days is None else check_days(days, today)
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
        run_id = ledger.start_run(session, trigger)

    summary = RunSummary(run_id=run_id, trigger=trigger, status="running", days=fetch_days)
    own_client = client is None
    concurrency = max(1, min(settings.sync.concurrency, len(keys)))
    if client is None:
        client = OpenRouterClient(settings.openrouter)
    with bound_contextvars(run_id=run_id):
        log.info(
            "sync_started",
            trigger=trigger,
            keys=len(keys),
            first_day=str(fetch_days[0]),
            last_day=str(fetch_days[-1]),
            days=len(fetch_days),
        )
        status = "interrupted"
        try:
            summary.keys_skipped = _run_keys(
                session_factory,
                keys,
                summary,
                fetch=lambda key: _fetch(
                    key,
                    client=client,
                    keyring=keyring,
                    settings=settings.sync,
                    run_days=fetch_days,
                    whole_window=days is None,
                    run_id=run_id,
                ),
                concurrency=concurrency,
                stop=stop,
            )
            if not summary.keys_skipped:
                status = "failed" if summary.keys_failed else "ok"
        except LockLostError as exc:
            summary.stopped = str(exc)
            summary.keys_skipped = len(keys) - len(summary.keys)
            log.error("sync_lock_lost", error=summary.stopped)
        finally:
            if own_client:
                client.close()
            # Also on KeyboardInterrupt or a database outage: never leave the run "running".
            summary.status = status
            try:
                with transaction(session_factory) as session:
                    ledger.finish_run(
                        session,
                        run_id,
                        status=status,
                        keys_ok=summary.keys_ok,
                        keys_failed=summary.keys_failed,
                    )
            except Exception:
                log.exception("sync_run_not_closed")
            log.info(
                "sync_finished",
                trigger=trigger,
                status=status,
                keys_ok=summary.keys_ok,
                keys_failed=summary.keys_failed,
                keys_skipped=summary.keys_skipped,
                **{f"rows_{k}": v for k, v in summary.counts.as_dict().items()},
                requests=summary.requests,
                duration_s=round(time.monotonic() - started, 3),
            )
    return summary


def _run_keys(
    session_factory: sessionmaker[Session],
    keys: list[ActiveKey],
    summary: RunSummary,
    *,
    fetch: Callable[[ActiveKey], _Fetched],
    concurrency: int,
    stop: threading.Event,
) -> int:
    """Fetch on ``concurrency`` threads and write in this one as answers arrive; returns how
    many keys were not started because ``stop`` was set.

    Up to twice ``concurrency`` keys are submitted at a time, so the threads always have the
    next key while this thread writes (a fetch that waited for its write made a latency-bound
    sync at concurrency 32 take 1.8 times its ideal). A key whose turn comes after ``stop``
    was set is not fetched: it is left for the next run.
    """

    leaving = threading.Event()  # this thread is leaving early: fetch no more

    def task(key: ActiveKey) -> _Fetched | None:
        return None if stop.is_set() or leaving.is_set() else fetch(key)

    pending = iter(keys)
    fetched = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sync-fetch") as pool:
        in_flight: set[Future[_Fetched | None]] = set()
        try:
            while True:
                while not stop.is_set() and len(in_flight) < 2 * concurrency:
                    key = next(pending, None)
                    if key is None:
                        break
                    in_flight.add(pool.submit(task, key))
                if not in_flight:
                    break
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                results = [item for item in (future.result() for future in done) if item]
                fetched += len(results)
                summary.keys.extend(_store(session_factory, summary.run_id, results))
        finally:
            # Leaving early (an interrupt, a lost database): the fetches in flight finish, the
            # queued ones see ``stop`` or are cancelled; no thread outlives the run.
            leaving.set()
            pool.shutdown(wait=True, cancel_futures=True)
    # Results arrive in completion order; report them in key order, run after run.
    summary.keys.sort(key=lambda outcome: outcome.api_key_id)
    return len(keys) - fetched


def locked_sync(
    engine: Engine,
    settings: Settings,
    keyring: Keyring,
    *,
    trigger: str,
    **kwargs: Any,
) -> RunSummary | None:
    """:func:`run_sync` while holding the database's sync lock; None if another sync holds it.

    Every entry point (the daemon, ``sync``, ``backfill``) goes through here, so two syncs never
    write at the same time on one database, whichever processes start them: the run writes
    only through the lock's own sessions (see :mod:`worker.locking`).
    """
    with sync_lock(engine) as locked:
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
        try:
            with transaction(make_session_factory(engine)) as session:
                ledger.finish_run(
                    session,
                    summary.run_id,
                    status=summary.status,
                    keys_ok=summary.keys_ok,
                    keys_failed=summary.keys_failed,
                )
        except Exception:
            log.exception("sync_run_not_closed")
    return summary
