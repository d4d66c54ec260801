"""Storing fetched answers, in the sync's one writing thread: group commits, answers held
back, failures recorded.

Answers that arrived together share one transaction of at most :data:`GROUP_COMMIT_ROWS` rows:
a commit and a transaction's set-up cost more than writing a small key's rows, and under a
high concurrency many answers arrive together. Each subject stays whole or absent: if a group
fails it is rolled back and its subjects are written one transaction each (re-reading what is
stored), so the failure stays with the one that caused it. A lost sync lock stops everything.

Subjects are registered keys (their rows in ``usage_stats``, their outcome in the ledger) and
catalogued keys of an account (their rows in ``key_usage_stats``, or in ``usage_stats`` when
the key is registered too; their fetch state in ``account_keys``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from worker.core.days import utc_now
from worker.core.errors import NotManagementKeyError
from worker.core.logs import bound_contextvars, get_logger
from worker.core.outcomes import KeyOutcome, describe_failure
from worker.core.usage import WriteCounts
from worker.store import catalogue as catalogue_store
from worker.store import keys as key_store
from worker.store import ledger
from worker.store.db import transaction
from worker.store.keys import ActiveKey
from worker.store.locking import LockLostError
from worker.store.usage_write import Withheld, write_usage
from worker.sync.catalogue import KeyJob
from worker.sync.fetch import Fetched
from worker.sync.summary import RunSummary

log = get_logger("worker.sync")

# A group commit holds at most this many rows: it keeps one write transaction (which blocks
# other SQLite writers) to a fraction of a second.
GROUP_COMMIT_ROWS = 20_000

HELD_BACK = (
    "OpenRouter's answer would delete {would_delete:,} of the {stored:,} rows stored for the days "
    "it covers (more than [sync] max_delete_fraction): nothing was written. If that spend is "
    "really gone, the same answer is applied when it comes again [sync] "
    "confirm_delete_after_hours later; `backfill --since DAY --until DAY` applies those days now"
)


def store(factory: sessionmaker[Session], summary: RunSummary, fetched: Sequence[Fetched]) -> None:
    """Store what arrived together; record failed fetches; account for all of it in
    ``summary``."""
    group: list[Fetched] = []
    size = 0
    for item in fetched:
        if item.error is not None:
            _record_failure(factory, summary, item, item.error)
            continue
        if group and size + item.size > GROUP_COMMIT_ROWS:
            _store_group(factory, summary, group)
            group, size = [], 0
        group.append(item)
        size += item.size
    if group:
        _store_group(factory, summary, group)


def _store_group(
    factory: sessionmaker[Session],
    summary: RunSummary,
    group: list[Fetched],
    *,
    first_try: bool = True,
) -> None:
    """One transaction for the group; if it fails, one more for each of its subjects. A
    subject that fails again is recorded as failed."""
    try:
        with transaction(factory) as session:
            outcomes = _write(session, summary, group)
    except LockLostError:
        raise  # stop writing at once: another sync may be running now
    except Exception as exc:
        if not first_try:
            _record_failure(factory, summary, group[0], exc)
            return
        log.info("group_write_failed", subjects=len(group), exc_info=True)
        for item in group:
            _store_group(factory, summary, [item], first_try=False)
        return
    # Counted once committed: a group rolled back and retried is not counted twice.
    for fetched, result in outcomes:
        _tally(summary, fetched, result)


def _write(
    session: Session, summary: RunSummary, group: Sequence[Fetched]
) -> list[tuple[Fetched, WriteCounts | Withheld | KeyOutcome]]:
    """In the caller's transaction: the rows, the subjects' state, the ledger."""
    now = utc_now()
    results: dict[int, WriteCounts | Withheld] = {}
    changed = [f for f in group if not f.unchanged and f.write is not None]
    for table in {f.table for f in changed}:
        batch = [f for f in changed if f.table == table]
        written = write_usage(session, [f.write for f in batch if f.write], table=table)
        results.update(zip((id(f) for f in batch), written, strict=True))
    done: list[tuple[Fetched, WriteCounts | Withheld | KeyOutcome]] = []
    outcomes: list[KeyOutcome] = []
    for fetched in group:
        result = results.get(id(fetched))
        if result is None:  # the answer stored last: nothing written
            result = WriteCounts(unchanged=_known_rows(fetched))
        outcome = _record(session, fetched, result, now)
        if outcome is not None:
            outcomes.append(outcome)
        done.append((fetched, outcome or result))
    key_store.mark_accepted(
        session, [f.subject.id for f in group if isinstance(f.subject, ActiveKey)], now
    )
    ledger.record_outcomes(session, summary.run_id, outcomes)
    return done


def _known_rows(fetched: Fetched) -> int:
    subject = fetched.subject
    if isinstance(subject, ActiveKey):
        return subject.activity_rows or 0
    return subject.entry.activity_rows or 0


def _record(
    session: Session, fetched: Fetched, result: WriteCounts | Withheld, now: dt.datetime
) -> KeyOutcome | None:
    """A subject's state after its write; the ledger outcome of a registered key."""
    subject = fetched.subject
    rows = fetched.size if fetched.digest else None
    if isinstance(subject, ActiveKey):
        if fetched.listing is not None:
            changes = catalogue_store.record_listing(session, subject.id, fetched.listing, now)
            log.debug(
                "account_keys_listed", account_id=subject.id, new=changes.new, gone=changes.gone
            )
        if isinstance(result, Withheld):
            assert fetched.body_digest is not None  # only whole-window answers are held back
            same = subject.suspicious_digest == fetched.body_digest
            since = subject.suspicious_since if same else None
            key_store.hold_back(session, subject.id, fetched.body_digest, since or now)
            return _failed(fetched, "suspicious_answer", HELD_BACK.format(**_held(result)))
        if not fetched.unchanged:
            key_store.remember_answer(session, subject.id, fetched.digest, rows)
        elif subject.suspicious_digest is not None:
            key_store.forget_held_back(session, subject.id)
        return _outcome(fetched, subject, "ok", result)
    entry, listed = subject.entry, subject.listed
    if isinstance(result, Withheld):
        message = HELD_BACK.format(**_held(result))
        catalogue_store.record_fetch_error(session, entry.id, message)
        if subject.registered is None:
            return None
        return _failed(fetched, "suspicious_answer", message)
    catalogue_store.record_fetch(
        session,
        entry.id,
        usage=listed.spend.usage if listed else entry.fetched_usage,
        daily=listed.spend.daily if listed else entry.fetched_daily,
        at=now,
        digest=fetched.digest if fetched.digest else entry.activity_digest,
        rows=rows if rows is not None else entry.activity_rows,
    )
    if subject.registered is None:
        return None
    return _outcome(fetched, subject.registered, "ok", result)


def _held(withheld: Withheld) -> dict[str, int]:
    return {"would_delete": withheld.would_delete, "stored": withheld.stored}


def _outcome(
    fetched: Fetched, key: ActiveKey, status: str, counts: WriteCounts | None = None
) -> KeyOutcome:
    return KeyOutcome(
        api_key_id=key.id,
        user_id=key.user_id,
        name=key.name,
        status=status,
        counts=counts or WriteCounts(),
        http_requests=fetched.requests,
    )


def _failed(fetched: Fetched, reason: str, error: str) -> KeyOutcome:
    subject = fetched.subject
    key = subject if isinstance(subject, ActiveKey) else subject.registered
    assert key is not None
    outcome = _outcome(fetched, key, "failed")
    outcome.reason, outcome.error = reason, error
    _log_failure(fetched, outcome.reason, outcome.error)
    return outcome


def _log_failure(fetched: Fetched, reason: str, error: str, trace: object = None) -> None:
    subject = fetched.subject
    extra = {"exc_info": trace} if trace is not None else {}
    if isinstance(subject, ActiveKey):
        with bound_contextvars(api_key_id=subject.id, user_id=subject.user_id):
            log.warning(
                "key_sync_failed", reason=reason, error=error, requests=fetched.requests, **extra
            )
        return
    log.warning(
        "account_key_sync_failed",
        account_id=subject.entry.account_id,
        key_hash=subject.entry.hash[:8],
        reason=reason,
        error=error,
        requests=fetched.requests,
        **extra,
    )


def _record_failure(
    factory: sessionmaker[Session], summary: RunSummary, fetched: Fetched, error: BaseException
) -> None:
    """Log a subject's failure and record it in its own transaction."""
    reason, message = describe_failure(error)
    # The traceback only for the unexpected; an expected failure is its one-line message.
    _log_failure(fetched, reason, message, error if reason == "unexpected" else None)
    subject = fetched.subject
    key = subject if isinstance(subject, ActiveKey) else subject.registered
    outcome = None
    if key is not None:
        outcome = _outcome(fetched, key, "failed")
        outcome.reason, outcome.error = reason, message
    try:
        with transaction(factory) as session:
            if isinstance(subject, ActiveKey):
                if isinstance(error, NotManagementKeyError):
                    key_store.mark_ordinary(session, subject.id)
                elif fetched.accepted:
                    key_store.mark_accepted(session, [subject.id], utc_now())
            else:
                catalogue_store.record_fetch_error(
                    session, subject.entry.id, f"{reason}: {message}"
                )
            if outcome is not None:
                ledger.record_outcomes(session, summary.run_id, [outcome])
    except LockLostError:
        raise
    except Exception:
        # E.g. the key was deleted meanwhile; the outcome is still reported and logged.
        log.exception("key_result_not_recorded")
    _tally(summary, fetched, outcome if outcome is not None else error)


def _tally(
    summary: RunSummary,
    fetched: Fetched,
    result: WriteCounts | Withheld | KeyOutcome | BaseException,
) -> None:
    """Count a subject's result in the run's summary."""
    if isinstance(result, KeyOutcome):
        summary.keys.append(result)  # its rows and requests are counted with the keys
        if isinstance(fetched.subject, KeyJob):
            summary.catalogue.count(0, WriteCounts(), failed=result.status == "failed")
        return
    if isinstance(fetched.subject, KeyJob):
        failed = isinstance(result, Withheld | BaseException)
        counts = result if isinstance(result, WriteCounts) else WriteCounts()
        summary.catalogue.count(fetched.requests, counts, failed=failed)
