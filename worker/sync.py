"""The ETL: for every active key, fetch → validate → aggregate → store, each key whole or absent.

:func:`run_sync` is one run (``sync``, ``backfill`` or a scheduled one):

1. open a ``sync_runs`` row and read the keys to poll (short transaction);
2. fetch keys concurrently: ``[sync] concurrency`` threads, each with its own
   :class:`~worker.openrouter.OpenRouterClient`, take the next key, decrypt it, fetch its
   activity and queue the answer, then take the next key without waiting for any write. The
   queue is bounded, so memory grows with the concurrency and not with the number of keys;
3. the calling thread takes every answer queued, validates and aggregates each by (date,
   model) in ``Decimal``, and writes them together in one short transaction (a group commit:
   :func:`worker.store.write_keys_days`, then their kinds, last uses and ledger rows). Each
   key is still whole or absent: if the group's transaction fails, its keys are written
   again one transaction each. The network is never called with a transaction open,
   and writes are serialized;
4. a key that fails (cannot be decrypted, 401, 403, invalid response, retries exhausted, a
   database error) is rolled back whole, recorded in the ledger and logged
   (``key_sync_failed``); the others go on;
5. close the run: ``ok``, ``failed`` (some key failed) or ``interrupted`` (``stop`` was set
   before every key had started), and log one ``sync_finished`` line.

An unchanged account costs almost nothing to re-sync: after storing a whole-window answer the
key records the answer's digest and a checksum of the rows it left (count and sums, one
aggregate query). When the next answer has the same digest, it is not validated again, and
the write transaction only re-reads the checksum: equal, the rows are
reported unchanged; different (someone changed the stored rows), the answer is validated and
stored as usual, which repairs them.

Collaborators (session factory, settings, keyring, client factory, clock) are arguments, so
tests need no monkeypatching.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker import store
from worker.config import Settings
from worker.crypto import Keyring
from worker.days import utc_today as _utc_today
from worker.db import transaction
from worker.errors import (
    BadRequestError,
    DecryptionError,
    InvalidResponseError,
    NotFoundError,
    NotManagementKeyError,
    OpenRouterError,
    RateLimitedError,
    UnauthorizedError,
    UpstreamUnavailableError,
    UsageError,
    WatcherError,
)
from worker.locking import sync_lock
from worker.logs import bound_contextvars, get_logger, mask_text
from worker.models import utcnow
from worker.openrouter import (
    ActivityAnswer,
    ActivityResult,
    ActivityRow,
    OpenRouterClient,
    completed_window,
)
from worker.store import ActiveKey, UsageRow, WriteCounts

log = get_logger(__name__)

MANAGEMENT_KEY_NOTE = "per-model history needs a management key"


class ActivityClient(Protocol):
    """What the sync needs from an OpenRouter client (tests pass stubs)."""

    def get_activity(
        self, api_key: str, *, day: dt.date | None = None, today: dt.date | None = None
    ) -> ActivityResult: ...

    def close(self) -> None: ...


@runtime_checkable
class RawActivityClient(ActivityClient, Protocol):
    """A client that can also hand back an answer unvalidated (the real one does): with it,
    answers are validated by the writer thread, and one identical to the last stored one is
    neither validated nor stored again. Other clients (test stubs) validate in the fetch
    thread, through ``get_activity``."""

    def fetch_activity(
        self, api_key: str, *, day: dt.date | None = None, today: dt.date | None = None
    ) -> ActivityAnswer: ...


ClientFactory = Callable[[], ActivityClient]


@dataclass(slots=True)
class KeyOutcome:
    """One key's result in a run."""

    api_key_id: int
    user_id: int
    name: str
    status: str  # ok | failed
    counts: WriteCounts = field(default_factory=WriteCounts)
    http_requests: int = 0
    reason: str | None = None  # a stable code when failed, e.g. not_management_key
    error: str | None = None  # the one-line message, never a secret

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_key_id": self.api_key_id,
            "user_id": self.user_id,
            "name": self.name,
            "status": self.status,
            "rows": self.counts.as_dict(),
            "requests": self.http_requests,
            "reason": self.reason,
            "error": self.error,
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
    # Seconds the calling thread spent in the per-key write transactions (make bench's
    # "write phase"); not part of the JSON output. Wall time: it includes waiting for the GIL
    # while the fetch threads parse, hence also the writer thread's CPU time in them.
    write_seconds: float = 0.0
    write_cpu_seconds: float = 0.0

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
        return sum(k.http_requests for k in self.keys)

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
            "rows": self.counts.as_dict(),
            "requests": self.requests,
            "results": [k.as_dict() for k in self.keys],
        }


@dataclass(slots=True)
class _Fetched:
    """A worker thread's result for one key: aggregated rows, or the error that stopped it."""

    key: ActiveKey
    rows: list[UsageRow] | None
    http_requests: int
    accepted: bool  # OpenRouter answered 200 at least once
    error: BaseException | None = None
    # A whole-window answer from a RawActivityClient, not validated yet (see _validate), and
    # its digest; None for a backfill or another client, which hand over ``rows``.
    digest: str | None = None
    answer: ActivityAnswer | None = None


# --- days -----------------------------------------------------------------------------------


def window_days(today: dt.date) -> list[dt.date]:
    """Every day of OpenRouter's window (the last 30 completed UTC days), oldest first."""
    first, last = completed_window(today)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def check_days(days: Iterable[dt.date], today: dt.date) -> list[dt.date]:
    """The days sorted and deduplicated; a :class:`UsageError` if one is outside the window."""
    first, last = completed_window(today)
    result = sorted(set(days))
    if not result:
        raise UsageError("no days to fetch")
    for day in result:
        if day >= today:
            raise UsageError(
                f"{day} is not a completed UTC day yet (today is {today}): "
                f"OpenRouter reports days up to {last}"
            )
        if day < first:
            raise UsageError(
                f"{day} is older than OpenRouter's window of 30 completed days "
                f"({first} … {last}): it can no longer be fetched"
            )
    return result


def backfill_days(
    today: dt.date,
    *,
    days: int | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> list[dt.date]:
    """The days a backfill asks for: the last ``days`` completed days, or ``since``…``until``.

    ``until`` defaults to yesterday. Raises :class:`UsageError` for a count outside 1…30, an
    inverted range or a day outside OpenRouter's window.
    """
    first, last = completed_window(today)
    if (days is None) == (since is None):
        raise UsageError("give either --days N or --since YYYY-MM-DD")
    if days is not None:
        if until is not None:
            raise UsageError("--until goes with --since, not with --days")
        span = (last - first).days + 1
        if not 1 <= days <= span:
            raise UsageError(
                f"--days must be between 1 and {span} (OpenRouter keeps the last "
                f"{span} completed days), got {days}"
            )
        return [today - dt.timedelta(days=n) for n in range(days, 0, -1)]
    assert since is not None
    until = until if until is not None else last
    if until < since:
        raise UsageError(f"--until {until} is before --since {since}")
    return check_days(
        (since + dt.timedelta(days=i) for i in range((until - since).days + 1)), today
    )


# --- aggregation ----------------------------------------------------------------------------


def aggregate(rows: Iterable[ActivityRow], days: Sequence[dt.date] | None = None) -> list[UsageRow]:
    """Sum endpoint rows per (date, model), exactly, in ``Decimal``.

    ``requests`` → requests_count, ``prompt_tokens`` → tokens_input, ``completion_tokens`` →
    tokens_output, ``reasoning_tokens`` → tokens_reasoning (already part of the completion
    tokens for billing, so never added to the output), ``usage`` → cost,
    ``byok_usage_inference`` → byok_cost. A row dated outside ``days`` is an invalid response.
    """
    allowed = set(days) if days is not None else None
    totals: dict[tuple[dt.date, str], list[Any]] = {}
    for row in rows:
        if allowed is not None and row.date not in allowed:
            raise InvalidResponseError(
                f"OpenRouter /activity: a row for {row.model} is dated "
                f"{row.date}, which was not requested"
            )
        key = (row.date, row.model)
        acc = totals.get(key)
        if acc is None:
            # The first endpoint's values start the totals (no adding to zero: with one
            # endpoint per model, the common case, nothing is added at all).
            totals[key] = [
                row.requests,
                row.prompt_tokens,
                row.completion_tokens,
                row.reasoning_tokens,
                Decimal(row.usage),
                Decimal(row.byok_usage_inference),
            ]
            continue
        acc[0] += row.requests
        acc[1] += row.prompt_tokens
        acc[2] += row.completion_tokens
        acc[3] += row.reasoning_tokens
        acc[4] += row.usage
        acc[5] += row.byok_usage_inference
    return [UsageRow(date, model, *acc) for (date, model), acc in sorted(totals.items())]


# --- failures -------------------------------------------------------------------------------

_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (DecryptionError, "decrypt_failed"),
    (UnauthorizedError, "unauthorized"),
    (NotManagementKeyError, "not_management_key"),
    (BadRequestError, "bad_request"),
    (RateLimitedError, "rate_limited"),
    (UpstreamUnavailableError, "upstream_unavailable"),
    (InvalidResponseError, "invalid_response"),
    (OpenRouterError, "openrouter_error"),
    (WatcherError, "error"),
)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(reason code, one-line message) for a key's failure; never contains a secret."""
    reason = next((code for cls, code in _REASONS if isinstance(exc, cls)), "unexpected")
    if reason == "unexpected":
        # A database or programming error: name it, the traceback goes to the log.
        text = f"unexpected {type(exc).__name__}: {exc}"
    else:
        text = str(exc)
    if reason == "not_management_key" and "management key" not in text:
        text = f"{text}: {MANAGEMENT_KEY_NOTE}"
    lines = mask_text(text).strip().splitlines()
    return reason, (lines[0] if lines else reason)


# --- the run --------------------------------------------------------------------------------


class _ClientPool:
    """One client per worker thread (created on first use), all closed at the end."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[ActivityClient] = []

    def get(self) -> ActivityClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # closing must not hide the run's own outcome
                log.warning("client_close_failed", exc_info=True)


def _fetch_key(
    key: ActiveKey,
    *,
    keyring: Keyring,
    pool: _ClientPool,
    days: list[dt.date],
    whole_window: bool,
    today: dt.date,
    run_id: int,
) -> _Fetched:
    """In a worker thread: decrypt and fetch one key (through ``get_activity``, also
    validate and aggregate). Never raises."""
    with bound_contextvars(run_id=run_id, api_key_id=key.id, user_id=key.user_id):
        requests = 0
        accepted = False
        client: ActivityClient | None = None
        before = 0
        try:
            secret = keyring.decrypt(key.key_encrypted, user_id=key.user_id, key_id=key.id)
            client = pool.get()
            before = getattr(client, "requests_made", 0)
            raw: list[ActivityRow] = []
            if whole_window and isinstance(client, RawActivityClient):
                answer = client.fetch_activity(secret, today=today)
                del secret
                # Validated by the writer thread (see _validate): the fetch threads then only
                # wait on the network, and do not hold the GIL while the writer writes.
                return _Fetched(
                    key, None, answer.requests_made, False, digest=answer.digest(), answer=answer
                )
            if whole_window:
                result = client.get_activity(secret, today=today)
                raw.extend(result.rows)
                requests += result.requests_made
                accepted = True
            else:
                for day in days:
                    result = client.get_activity(secret, day=day, today=today)
                    raw.extend(result.rows)
                    requests += result.requests_made
                    accepted = True
            del secret
            rows = aggregate(raw, days)
            return _Fetched(key, rows, requests, accepted)
        except Exception as exc:
            # A per-thread client counts every request it sent, the failed call's retries
            # included; a stub without the counter falls back to the successful calls.
            counted = getattr(client, "requests_made", None) if client is not None else None
            if isinstance(counted, int):
                requests = max(requests, counted - before)
            return _Fetched(key, None, requests, accepted, error=exc)


def _default_client_factory(settings: Settings) -> ClientFactory:
    return lambda: OpenRouterClient(settings.openrouter)


def run_sync(
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    *,
    trigger: str = "sync",
    days: Sequence[dt.date] | None = None,
    key_ids: Iterable[int] | None = None,
    today: dt.date | None = None,
    client_factory: ClientFactory | None = None,
    stop: threading.Event | None = None,
    utc_today: Callable[[], dt.date] = _utc_today,
) -> RunSummary:
    """Run one sync over every active key (or ``key_ids``); returns what happened.

    ``days=None`` fetches OpenRouter's whole window in one request per key, and every day of
    the window is written (a day without rows deletes that key's rows for the day). A list of
    ``days`` (a backfill) fetches one request per day with ``date=``, and only those days are
    written. Raises :class:`UsageError` for a day outside the window and
    :class:`NotFoundError` for an unknown or inactive id in ``key_ids``, before anything is
    fetched or recorded.
    """
    today = today or utc_today()
    whole_window = days is None
    fetch_days = window_days(today) if days is None else check_days(days, today)
    wanted = None if key_ids is None else sorted(set(key_ids))
    factory = client_factory or _default_client_factory(settings)
    stop = stop or threading.Event()
    started = time.monotonic()

    with transaction(session_factory) as session:
        keys = store.active_keys(session, wanted)
        if wanted is not None:
            missing = sorted(set(wanted) - {k.id for k in keys})
            if missing:
                raise NotFoundError(
                    f"no active API key with id {', '.join(map(str, missing))}: "
                    "see `openrouter-watcher keys list`"
                )
        run_id = store.start_run(session, trigger)

    summary = RunSummary(run_id=run_id, trigger=trigger, status="running", days=fetch_days)
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
            _run_keys(
                session_factory,
                keyring,
                keys,
                summary,
                factory=factory,
                concurrency=settings.sync.concurrency,
                days=fetch_days,
                whole_window=whole_window,
                today=today,
                stop=stop,
            )
            if summary.keys_skipped:
                status = "interrupted"
            else:
                status = "failed" if summary.keys_failed else "ok"
        finally:
            # Also on KeyboardInterrupt or a database outage: never leave the run "running".
            summary.status = status
            try:
                with transaction(session_factory) as session:
                    store.finish_run(
                        session,
                        run_id,
                        status=status,
                        keys_ok=summary.keys_ok,
                        keys_failed=summary.keys_failed,
                    )
            except Exception:
                log.exception("sync_run_not_closed")
            counts = summary.counts
            log.info(
                "sync_finished",
                trigger=trigger,
                status=status,
                keys_ok=summary.keys_ok,
                keys_failed=summary.keys_failed,
                keys_skipped=summary.keys_skipped,
                **{f"rows_{k}": v for k, v in counts.as_dict().items()},
                requests=summary.requests,
                duration_s=round(time.monotonic() - started, 3),
            )
    return summary


def _run_keys(
    session_factory: sessionmaker[Session],
    keyring: Keyring,
    keys: list[ActiveKey],
    summary: RunSummary,
    *,
    factory: ClientFactory,
    concurrency: int,
    days: list[dt.date],
    whole_window: bool,
    today: dt.date,
    stop: threading.Event,
) -> None:
    """Fetch with ``concurrency`` threads; write the results as they arrive, in this thread.

    Each fetch thread takes the next key, fetches it and queues the result, then takes the
    next one: a fetch never waits for a write, so the network stays busy while this thread
    writes (when each finished fetch waited for its write before the next one started, a
    latency-bound sync at concurrency 32 took 1.8 times its ideal). The queue holds at most
    ``concurrency`` results, so memory grows with the concurrency, not with the keys: at most
    ``concurrency`` answers in flight, as many queued and as many being written.
    """
    workers = max(1, min(concurrency, len(keys)))
    results: queue.Queue[_Fetched | _WorkerDone] = queue.Queue(maxsize=workers)
    pending = iter(keys)
    taken = 0
    take_lock = threading.Lock()
    abandon = threading.Event()  # this thread is leaving early: fetch threads stop too
    pool = _ClientPool(factory)

    def next_key() -> ActiveKey | None:
        nonlocal taken
        with take_lock:
            if stop.is_set() or abandon.is_set():
                return None
            key = next(pending, None)
            if key is not None:
                taken += 1
            return key

    def fetch_loop() -> None:
        crash: BaseException | None = None
        try:
            while (key := next_key()) is not None:
                results.put(
                    _fetch_key(
                        key,
                        keyring=keyring,
                        pool=pool,
                        days=days,
                        whole_window=whole_window,
                        today=today,
                        run_id=summary.run_id,
                    )
                )
        except BaseException as exc:  # _fetch_key returns errors; this is e.g. an interrupt
            crash = exc
        finally:
            results.put(_WorkerDone(crash))

    threads = [
        threading.Thread(target=fetch_loop, name=f"sync-fetch-{n}", daemon=True)
        for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    try:
        running = workers
        while running:
            # Everything already queued is written together (see _store_keys).
            items = [results.get()]
            while True:
                try:
                    items.append(results.get_nowait())
                except queue.Empty:
                    break
            batch: list[_Fetched] = []
            for item in items:
                if isinstance(item, _WorkerDone):
                    running -= 1
                    if item.crash is not None:
                        raise item.crash
                else:
                    batch.append(_validate(item, days))
            if not batch:
                continue
            write_started = time.perf_counter()
            cpu_started = time.thread_time()
            summary.keys.extend(_store_keys(session_factory, summary.run_id, batch, days))
            summary.write_seconds += time.perf_counter() - write_started
            summary.write_cpu_seconds += time.thread_time() - cpu_started
        summary.keys_skipped = len(keys) - taken
        # Results arrive in completion order; report them in key order, run after run.
        summary.keys.sort(key=lambda outcome: outcome.api_key_id)
    finally:
        abandon.set()
        # Wait for the fetch threads: each finishes the request it is in. When leaving early,
        # one may be blocked queueing a result nobody will write: taking it frees the thread.
        for thread in threads:
            while thread.is_alive():
                try:
                    results.get_nowait()
                except queue.Empty:
                    pass
                thread.join(timeout=0.01)
        pool.close()


@dataclass(slots=True)
class _WorkerDone:
    """A fetch thread's last message: it took its last key (or crashed with ``crash``)."""

    crash: BaseException | None = None


def _validate(fetched: _Fetched, days: list[dt.date]) -> _Fetched:
    """In the calling thread: validate and aggregate an unvalidated whole-window answer.

    An answer identical to the last one stored for the key (same digest) was valid then: it
    is kept for :func:`_write_keys` to check against the stored rows. Done here rather than
    in the fetch threads: the run is CPU-bound on one interpreter, and fetch threads parsing
    while the writer writes made it wait for the GIL after every SQLite call (the write
    transactions took about three times their CPU time).
    """
    answer = fetched.answer
    if answer is None or fetched.error is not None:
        return fetched
    key = fetched.key
    if fetched.digest == key.activity_digest and key.activity_checksum is not None:
        fetched.accepted = True
        return fetched
    fetched.answer = None
    try:
        fetched.rows = aggregate(answer.parse().rows, days)
    except Exception as exc:  # an invalid answer fails this key only, as in _fetch_key
        fetched.error = exc
        return fetched
    fetched.accepted = True
    return fetched


# A group commit holds at most this many rows: it keeps one write transaction (which blocks
# other SQLite writers) to a fraction of a second.
GROUP_COMMIT_ROWS = 20_000


def _store_keys(
    session_factory: sessionmaker[Session],
    run_id: int,
    batch: list[_Fetched],
    days: list[dt.date],
) -> list[KeyOutcome]:
    """In the calling thread: store the keys whose answers arrived together.

    Fetched keys share one transaction (a group commit) of at most :data:`GROUP_COMMIT_ROWS`
    rows: a commit and a transaction's set-up cost more than writing a small key's rows
    (about 0.5 of 1 ms per 30-row key on SQLite, measured), and under a high concurrency many
    answers arrive together. Each key stays whole or absent. If the shared transaction fails,
    it is rolled back and its keys are stored one transaction each, so the failure stays
    with the key that caused it. Failed fetches are recorded one by one.
    """
    outcomes: list[KeyOutcome] = []
    group: list[_Fetched] = []
    group_rows = 0
    for fetched in batch:
        if fetched.error is not None:
            outcomes.append(_store_key(session_factory, run_id, fetched, days))
            continue
        size = _row_count(fetched)
        if group and group_rows + size > GROUP_COMMIT_ROWS:
            outcomes.extend(_store_group(session_factory, run_id, group, days))
            group, group_rows = [], 0
        group.append(fetched)
        group_rows += size
    if group:
        outcomes.extend(_store_group(session_factory, run_id, group, days))
    return outcomes


def _row_count(fetched: _Fetched) -> int:
    if fetched.rows is not None:
        return len(fetched.rows)
    # An identical answer is only checked against the stored checksum.
    return 1


def _store_group(
    session_factory: sessionmaker[Session],
    run_id: int,
    group: list[_Fetched],
    days: list[dt.date],
) -> list[KeyOutcome]:
    """One transaction for the keys of ``group``, new rows sent as plain inserts; if it
    fails, one transaction each, every row through the upsert."""
    try:
        with transaction(session_factory) as session:
            counts = _write_keys(session, run_id, group, days, plain_inserts=True)
    except Exception:
        # Rolled back whole: nothing of the group is stored. Store its keys one by one, so
        # only the key that fails again is recorded as failed; through the upsert, in case
        # a row read as absent appeared meanwhile (see store.send_inserts).
        log.info("group_commit_failed", keys=len(group), exc_info=True)
        return [_store_key(session_factory, run_id, fetched, days) for fetched in group]
    return [_synced(fetched, written) for fetched, written in zip(group, counts, strict=True)]


def _outcome(fetched: _Fetched) -> KeyOutcome:
    key = fetched.key
    return KeyOutcome(
        api_key_id=key.id,
        user_id=key.user_id,
        name=key.name,
        status="ok",
        http_requests=fetched.http_requests,
    )


def _synced(fetched: _Fetched, counts: WriteCounts) -> KeyOutcome:
    """The outcome of a key whose transaction committed, and its ``key_synced`` line."""
    outcome = _outcome(fetched)
    outcome.counts = counts
    with bound_contextvars(api_key_id=fetched.key.id, user_id=fetched.key.user_id):
        # DEBUG: at INFO, one line per key was a sixth of a small key's CPU time (logging is
        # synchronous), and the ledger (sync_key_results, `status`) keeps the same figures.
        # Failures stay WARNING lines, and the run's totals an INFO line.
        log.debug(
            "key_synced",
            **{f"rows_{k}": v for k, v in counts.as_dict().items()},
            requests=fetched.http_requests,
        )
    return outcome


def _write_keys(
    session: Session,
    run_id: int,
    group: Sequence[_Fetched],
    days: list[dt.date],
    *,
    plain_inserts: bool,
) -> list[WriteCounts]:
    """In the caller's transaction: fetched keys' rows, kinds, last uses and ledger rows.

    The keys share their statements (see :func:`worker.store.write_keys_days`). An answer
    identical to the last stored one is only checked: if the key's stored rows still give
    the checksum recorded then, they are all unchanged and nothing is written; otherwise
    (someone changed them since) the answer is validated and stored again, which repairs
    them. A whole-window answer that was stored records its digest with the checksum of the
    rows it left.
    """
    first, last = days[0], days[-1]
    rows_of: dict[int, list[UsageRow]] = {}
    unchanged: dict[int, WriteCounts] = {}
    identical = [f.key.id for f in group if f.answer is not None]
    checksums = store.window_checksums(session, identical, first, last)
    for fetched in group:
        key = fetched.key
        if fetched.answer is not None:
            if checksums[key.id] == key.activity_checksum:
                count = store.checksum_rows(checksums[key.id])
                unchanged[key.id] = WriteCounts(unchanged=count)
                continue
            # The stored rows changed since (by hand, or a backfill): store the answer again.
            rows_of[key.id] = aggregate(fetched.answer.parse().rows, days)
        else:
            assert fetched.rows is not None
            rows_of[key.id] = fetched.rows
    written = dict(
        zip(
            rows_of,
            store.write_keys_days(
                session, list(rows_of.items()), days, plain_inserts=plain_inserts
            ),
            strict=True,
        )
    )
    recorded = [f.key.id for f in group if f.digest is not None and f.key.id in written]
    after = store.window_checksums(session, recorded, first, last)
    synced = []
    for fetched in group:
        key = fetched.key
        counts = unchanged[key.id] if key.id in unchanged else written[key.id]
        digest, checksum = key.activity_digest, key.activity_checksum  # kept as recorded
        if key.id in after:
            digest, checksum = fetched.digest, after[key.id]
        synced.append(store.SyncedKey(key.id, counts, fetched.http_requests, digest, checksum))
    store.record_synced_keys(session, run_id, synced, accepted_at=utcnow())
    return [key.counts for key in synced]


def _store_key(
    session_factory: sessionmaker[Session], run_id: int, fetched: _Fetched, days: list[dt.date]
) -> KeyOutcome:
    """In the calling thread: one transaction for the key's rows, kind, last use and ledger;
    or, for a key whose fetch failed, its failure."""
    key = fetched.key
    outcome = _outcome(fetched)
    with bound_contextvars(api_key_id=key.id, user_id=key.user_id):
        error = fetched.error
        if error is None:
            try:
                with transaction(session_factory) as session:
                    (counts,) = _write_keys(session, run_id, [fetched], days, plain_inserts=False)
            except Exception as exc:  # the key's transaction is rolled back whole
                error = exc
        if error is None:
            return _synced(fetched, counts)

        outcome.status = "failed"
        outcome.reason, outcome.error = describe_failure(error)
        # The traceback only for the unexpected; an expected failure is its one-line message.
        trace = {"exc_info": error} if outcome.reason == "unexpected" else {}
        log.warning(
            "key_sync_failed",
            reason=outcome.reason,
            error=outcome.error,
            requests=fetched.http_requests,
            **trace,
        )
        try:
            with transaction(session_factory) as session:
                if isinstance(error, NotManagementKeyError):
                    store.mark_key_seen(session, key.id, kind=store.KEY_ORDINARY)
                elif fetched.accepted:
                    store.mark_key_seen(
                        session, key.id, kind=store.KEY_MANAGEMENT, accepted_at=utcnow()
                    )
                store.record_key_result(
                    session,
                    run_id,
                    key.id,
                    status="failed",
                    http_requests=fetched.http_requests,
                    error=outcome.error,
                )
        except Exception:
            # E.g. the key was deleted meanwhile; the outcome is still reported and logged.
            log.exception("key_result_not_recorded")
        return outcome


def locked_sync(
    engine: Engine,
    session_factory: sessionmaker[Session],
    settings: Settings,
    keyring: Keyring,
    *,
    trigger: str,
    **kwargs: Any,
) -> RunSummary | None:
    """:func:`run_sync` while holding the database's sync lock; None if another sync holds it.

    Every entry point (the daemon, ``sync``, ``backfill``) goes through here, so two syncs never
    overlap on one database, whichever processes start them.
    """
    with sync_lock(engine) as held:
        if not held:
            log.info(
                "sync_skipped",
                trigger=trigger,
                reason="another sync is running against this database",
            )
            return None
        # Holding the lock proves no other process is syncing: a run still marked
        # "running" was cut short (killed, machine lost) and is marked interrupted.
        with transaction(session_factory) as session:
            stale = store.interrupt_stale_runs(session)
        if stale:
            log.warning("stale_runs_marked_interrupted", run_ids=stale)
        return run_sync(session_factory, settings, keyring, trigger=trigger, **kwargs)
