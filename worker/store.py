"""The SQL the ETL needs: which keys to poll, what is stored, the idempotent write, the ledger.

No orchestration here: every function takes the caller's :class:`Session` and runs inside the
caller's transaction, so :mod:`worker.sync` decides what one unit of work is (one key).

The write (:func:`write_key_days`) treats each fetched day as the full truth for that day:

1. read the key's stored rows for those days;
2. compare them with the fetched (date, model) aggregates, in exact ``Decimal``;
3. send only the new and changed rows through one ``INSERT … ON CONFLICT (api_key_id, date,
   model) DO UPDATE … WHERE (stored) IS DISTINCT FROM (excluded)`` statement (the dialect's
   own ``insert``; SQLAlchemy renders ``IS NOT`` on SQLite, which has the same semantics);
4. delete the stored rows of those days whose model is no longer reported.

An unchanged re-sync therefore sends no write at all, and on PostgreSQL burns no sequence
values (``INSERT … ON CONFLICT`` consumes one per attempted row, even when it skips).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from worker.models import (
    ApiKey,
    SyncKeyResult,
    SyncRun,
    UsageStats,
    User,
    to_money,
    utcnow,
)

# Rows per statement: large enough that round trips do not dominate, small enough that one
# statement's parameters stay a few megabytes whatever the account's size.
CHUNK_SIZE = 5000

# Keys per statement when a group of keys is read or checked at once.
KEY_CHUNK = 500

# The values a sync writes; (api_key_id, date, model) is the natural key.
VALUE_COLUMNS = (
    "requests_count",
    "tokens_input",
    "tokens_output",
    "tokens_reasoning",
    "cost",
    "byok_cost",
)

TRIGGERS = ("sync", "backfill", "schedule")
KEY_MANAGEMENT = "management"
KEY_ORDINARY = "ordinary"

T = TypeVar("T")

# Core-level access to the table (no ORM identity map): bulk statements only.
USAGE: Table = UsageStats.__table__  # type: ignore[assignment]
KEYS: Table = ApiKey.__table__  # type: ignore[assignment]
RESULTS: Table = SyncKeyResult.__table__  # type: ignore[assignment]
_MARK_KEY_SEEN = update(KEYS).where(KEYS.c.id == bindparam("key_id"))
_RECORD_KEY_RESULT = insert(RESULTS)


class UsageRow(NamedTuple):
    """One (date, model) total for one key, as stored in ``usage_stats``.

    A NamedTuple (immutable, built at C speed) rather than a frozen dataclass, whose
    ``__init__`` costs about 1 µs a row: a sync builds one per stored row.
    """

    date: dt.date
    model: str
    requests_count: int = 0
    tokens_input: int = 0
    tokens_output: int = 0
    tokens_reasoning: int = 0
    cost: Decimal = Decimal(0)
    byok_cost: Decimal = Decimal(0)

    def values(self) -> tuple[Any, ...]:
        """The compared values; money quantized so 0.3 and 0.300000000 are equal."""
        return (
            self.requests_count,
            self.tokens_input,
            self.tokens_output,
            self.tokens_reasoning,
            to_money(self.cost),
            to_money(self.byok_cost),
        )


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """A key to poll: its ids, its label and its ciphertext (never the plaintext)."""

    id: int
    user_id: int
    name: str
    key_encrypted: str
    # What the last stored whole-window answer left (see remember_activity); None if unknown.
    activity_digest: str | None = None
    activity_checksum: str | None = None

    def __repr__(self) -> str:  # keep the ciphertext out of reprs and tracebacks
        return f"ActiveKey(id={self.id}, user_id={self.user_id}, name={self.name!r})"


@dataclass(slots=True)
class WriteCounts:
    """What one write did to ``usage_stats``."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def written(self) -> int:
        """Rows actually sent to the database (inserted, updated or deleted)."""
        return self.inserted + self.updated + self.deleted

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _driver(session: Session) -> Any:
    """The sqlite3 or psycopg connection under the session's transaction."""
    return session.connection().connection.driver_connection


def _fetch_all(session: Session, sql: str, params: Sequence[Any]) -> list[Any]:
    """Run driver SQL in the session's transaction and return every row, as the driver returns
    them: SQLAlchemy's statement building and result processing cost more than these small
    queries themselves (measured), and they run for every group of keys."""
    cursor = _driver(session).cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


# --- keys ------------------------------------------------------------------------------------


def active_keys(session: Session, key_ids: Iterable[int] | None = None) -> list[ActiveKey]:
    """Active keys of active users, by id; only those in ``key_ids`` when it is given."""
    stmt = (
        select(
            ApiKey.id,
            ApiKey.user_id,
            ApiKey.name,
            ApiKey.key_encrypted,
            ApiKey.activity_digest,
            ApiKey.activity_checksum,
        )
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.is_active.is_(True), User.is_active.is_(True))
        .order_by(ApiKey.id)
    )
    if key_ids is not None:
        stmt = stmt.where(ApiKey.id.in_(list(key_ids)))
    return [ActiveKey(*row) for row in session.execute(stmt)]


def mark_key_seen(
    session: Session,
    api_key_id: int,
    *,
    kind: str,
    accepted_at: dt.datetime | None = None,
    activity: tuple[str, str] | None = None,
) -> None:
    """Record what OpenRouter said about a key: its kind, and when it last accepted it.

    ``kind`` is ``management`` (``/activity`` answered 200) or ``ordinary`` (403).
    ``accepted_at`` is set only when OpenRouter accepted the key. ``activity`` is the
    (digest, checksum) of a whole-window answer just stored (see :func:`window_checksum`).
    """
    values: dict[str, Any] = {"kind": kind}
    if accepted_at is not None:
        values["last_used_at"] = accepted_at
    if activity is not None:
        values["activity_digest"], values["activity_checksum"] = activity
    values["key_id"] = api_key_id
    # A constant statement on the Core table, the SET clause taken from the parameters: an
    # ORM-enabled update() and building .values() per call were a measurable part of a small
    # key's write transaction (one per key per run, on the writer's critical path).
    session.execute(_MARK_KEY_SEEN, values)


def window_checksums(
    session: Session, api_key_ids: Sequence[int], first: dt.date, last: dt.date
) -> dict[int, str]:
    """For each key, the count and sums of its stored rows dated ``first``…``last``, as one
    string (a key without rows gets the string of zero rows).

    One aggregate query per :data:`KEY_CHUNK` keys over the (api_key_id, date, model)
    index. Money is summed in whole nano-dollars (exact on SQLite too, whose NUMERIC is a
    float); the models' lengths are summed too, so a renamed model shows. Equal strings mean
    the rows very probably did not change: a change that keeps the count and every sum equal
    goes unnoticed.
    """
    sqlite_types = session.get_bind().dialect.name == "sqlite"
    mark = "?" if sqlite_types else "%s"
    bounds = (first.isoformat(), last.isoformat()) if sqlite_types else (first, last)
    result = {key_id: _EMPTY_CHECKSUM for key_id in api_key_ids}
    for ids in _chunks(list(api_key_ids), KEY_CHUNK):
        # Driver SQL, like _stored_wire: building the equivalent select() on every call cost
        # more than running it. Only constants and markers are formatted in.
        sql = (
            "SELECT api_key_id, count(*), sum(requests_count), sum(tokens_input), "  # noqa: S608
            "sum(tokens_output), sum(tokens_reasoning), sum(round(cost * 1000000000)), "
            "sum(round(byok_cost * 1000000000)), sum(length(model)) FROM usage_stats "
            f"WHERE api_key_id IN ({', '.join([mark] * len(ids))}) "
            f"AND date BETWEEN {mark} AND {mark} GROUP BY api_key_id"
        )
        for key_id, *values in _fetch_all(session, sql, (*ids, *bounds)):
            result[key_id] = "|".join("" if value is None else str(value) for value in values)
    return result


def window_checksum(session: Session, api_key_id: int, first: dt.date, last: dt.date) -> str:
    """:func:`window_checksums` of one key."""
    return window_checksums(session, [api_key_id], first, last)[api_key_id]


_EMPTY_CHECKSUM = "0" + "|" * 7  # count 0, every sum NULL


def checksum_rows(checksum: str) -> int:
    """The row count recorded in a :func:`window_checksum`."""
    return int(checksum.split("|", 1)[0])


# --- usage rows ------------------------------------------------------------------------------


def _upsert_sql(dialect: str) -> str:
    """``INSERT … ON CONFLICT (api_key_id, date, model) DO UPDATE … WHERE … IS DISTINCT FROM``
    as driver SQL: the guard skips the write when nothing changed (rendered ``IS NOT`` on
    SQLite), which protects a row another writer changed since it was compared.

    The ETL sends it with the driver's ``executemany`` and parameters already in the driver's
    types (see :func:`_wire`): SQLAlchemy's per-row, per-column bind processing cost about
    two thirds of the write time (measured by ``make bench``).
    """
    columns = ("api_key_id", "date", "model", *VALUE_COLUMNS, "created_at")
    sets = ", ".join(f"{name} = excluded.{name}" for name in VALUE_COLUMNS)
    distinct = "IS NOT" if dialect == "sqlite" else "IS DISTINCT FROM"
    guard = " OR ".join(f"usage_stats.{name} {distinct} excluded.{name}" for name in VALUE_COLUMNS)
    if dialect == "sqlite":
        source = f"VALUES ({', '.join(['?'] * len(columns))})"
    else:
        source = f"SELECT *, %s::timestamptz FROM {_PG_INCOMING}"  # noqa: S608 - constants
    return (
        f"INSERT INTO usage_stats ({', '.join(columns)}) {source} "
        f"ON CONFLICT (api_key_id, date, model) DO UPDATE SET {sets} WHERE {guard}"
    )


# PostgreSQL: the rows are COPYed into this per-session temporary table, then upserted by one
# INSERT … SELECT. A psycopg executemany (pipelined, one Bind/Execute per row) reached 52,000
# rows/s here and one INSERT … SELECT FROM unnest(arrays) 74,000 (arrays are dumped in Python);
# COPY is dumped in C.
_PG_INCOMING = "usage_stats_incoming"
_PG_INCOMING_DDL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_PG_INCOMING} (api_key_id bigint, date date, "
    "model text, requests_count integer, tokens_input bigint, tokens_output bigint, "
    "tokens_reasoning bigint, cost numeric, byok_cost numeric)"
)
_PG_COPY = f"COPY {_PG_INCOMING} (api_key_id, date, model, {', '.join(VALUE_COLUMNS)}) FROM STDIN"


def _wire(row: UsageRow, sqlite_types: bool) -> tuple[Any, ...]:
    """The compared values as the driver stores them (what :class:`Money` and ``Date`` bind):
    money as a float on SQLite (its NUMERIC is a float), an exact Decimal on PostgreSQL."""
    if sqlite_types:
        return (
            row.requests_count,
            row.tokens_input,
            row.tokens_output,
            row.tokens_reasoning,
            float(row.cost),
            float(row.byok_cost),
        )
    return (
        row.requests_count,
        row.tokens_input,
        row.tokens_output,
        row.tokens_reasoning,
        row.cost,
        row.byok_cost,
    )


def _stored_wire(
    session: Session, api_key_ids: Sequence[int], days: set[dt.date], sqlite_types: bool
) -> dict[int, dict[tuple[dt.date, str], tuple[int, tuple[Any, ...]]]]:
    """The keys' stored rows for ``days`` as the driver returns them (no type processing):
    ``{api_key_id: {(date, model): (row id, wire values)}}``, every key present; NULLs
    (rows written outside the worker) read as zero."""
    result: dict[int, dict[tuple[dt.date, str], tuple[int, tuple[Any, ...]]]] = {
        key_id: {} for key_id in api_key_ids
    }
    if not days:
        return result
    by_text = {day.isoformat(): day for day in days}
    mark = "?" if sqlite_types else "%s"
    # NULLs become zero in SQL, and the rows come through the driver's own fetchall: going
    # through SQLAlchemy's result rows and a Python loop cost about 1.5 µs a row (measured),
    # the bulk of an unchanged re-sync's write transaction. Only constant identifiers and
    # markers are formatted in; every value is bound.
    values = ", ".join(f"COALESCE({name}, 0)" for name in VALUE_COLUMNS)
    day_params = tuple(by_text if sqlite_types else by_text.values())
    for ids in _chunks(list(api_key_ids), KEY_CHUNK):
        sql = (
            f"SELECT api_key_id, date, model, id, {values} FROM usage_stats "  # noqa: S608
            f"WHERE api_key_id IN ({', '.join([mark] * len(ids))}) "
            f"AND date IN ({', '.join([mark] * len(day_params))})"
        )
        for row in _fetch_all(session, sql, (*ids, *day_params)):
            date = by_text[row[1]] if sqlite_types else row[1]
            result[row[0]][(date, row[2])] = (row[3], row[4:])
    return result


def _same(stored: tuple[Any, ...], fetched: UsageRow, wire: tuple[Any, ...]) -> bool:
    """Equal as stored values: the exact driver values, else the quantized Decimals (so a
    float written by another tool, or 0.3 and 0.300000000, still compare equal)."""
    if stored == wire:
        return True
    n, t_in, t_out, t_reason, cost, byok = stored
    old = UsageRow(
        fetched.date,
        fetched.model,
        n,
        t_in,
        t_out,
        t_reason,
        to_money(cost) or Decimal(0),
        to_money(byok) or Decimal(0),
    )
    return old.values() == fetched.values()


def _all_new(
    api_key_id: int,
    rows: list[UsageRow],
    day_set: set[dt.date],
    sqlite_types: bool,
    created: Any,
    to_insert: list[tuple[Any, ...]],
) -> WriteCounts:
    """Queue ``rows`` (none of them stored) on ``to_insert``, as :func:`write_keys_days` does."""
    outside = {row.date for row in rows} - day_set
    if outside:
        raise ValueError(f"row for {min(outside)} is outside the days being written")
    if len({(row.date, row.model) for row in rows}) != len(rows):
        raise ValueError(f"two rows for one model and day for key {api_key_id}: aggregate first")
    if sqlite_types:
        to_insert.extend(
            (api_key_id, row.date.isoformat(), row.model, *_wire(row, True), created)
            for row in rows
        )
    else:
        # A UsageRow is already (date, model, *values) in the driver's types.
        to_insert.extend((api_key_id, *row) for row in rows)
    return WriteCounts(inserted=len(rows))


def send_upserts(
    session: Session, rows: Sequence[tuple[Any, ...]], created: Any, *, chunk_size: int = CHUNK_SIZE
) -> None:
    """Upsert rows already in the driver's types (see :func:`_wire`), in the caller's transaction.

    SQLite: ``executemany`` of the upsert, each row carrying its ``created_at``. PostgreSQL: COPY
    into a temporary table, then one ``INSERT … SELECT`` with ``created`` bound once.
    """
    # No RETURNING: measured 6x slower on psycopg 3 for bulk upserts; counts come from the
    # caller's comparison. Chunks keep one statement's parameters a few megabytes.
    dialect = session.get_bind().dialect.name
    sql = _upsert_sql(dialect)
    driver = _driver(session)
    for chunk in _chunks(rows, chunk_size):
        if dialect == "sqlite":
            driver.executemany(sql, chunk)
        else:
            with driver.cursor() as cursor:
                cursor.execute(_PG_INCOMING_DDL)
                with cursor.copy(_PG_COPY) as copy:
                    for values in chunk:
                        copy.write_row(values)
                cursor.execute(sql, (created,))
                cursor.execute(f"DELETE FROM {_PG_INCOMING}")  # noqa: S608 - a constant


_INSERT_COLUMNS = ("api_key_id", "date", "model", *VALUE_COLUMNS, "created_at")
_SQLITE_INSERT = (
    f"INSERT INTO usage_stats ({', '.join(_INSERT_COLUMNS)}) "  # noqa: S608 - constants
    f"VALUES ({', '.join(['?'] * len(_INSERT_COLUMNS))})"
)
_PG_COPY_DIRECT = f"COPY usage_stats ({', '.join(_INSERT_COLUMNS)}) FROM STDIN"


def send_inserts(
    session: Session, rows: Sequence[tuple[Any, ...]], created: Any, *, chunk_size: int = CHUNK_SIZE
) -> None:
    """Insert rows that were just read as absent (same tuples as :func:`send_upserts`).

    A plain ``executemany`` INSERT on SQLite and a ``COPY`` straight into ``usage_stats`` on
    PostgreSQL: no conflict handling, so about twice as fast as the upsert on PostgreSQL
    (measured: 143,000 against 70,000–100,000 rows/s) and the same statement as the raw
    driver's floor on SQLite. If a row appeared since it was read (a writer outside the sync:
    other syncs hold the sync lock), the unique constraint refuses it and the caller's
    transaction fails; the sync then writes the key again through the upsert alone.
    """
    dialect = session.get_bind().dialect.name
    driver = _driver(session)
    for chunk in _chunks(rows, chunk_size):
        if dialect == "sqlite":
            driver.executemany(_SQLITE_INSERT, chunk)
        else:
            with driver.cursor() as cursor, cursor.copy(_PG_COPY_DIRECT) as copy:
                for values in chunk:
                    copy.write_row((*values, created))


def write_key_days(
    session: Session,
    api_key_id: int,
    days: Iterable[dt.date],
    rows: Iterable[UsageRow],
    *,
    chunk_size: int = CHUNK_SIZE,
) -> WriteCounts:
    """:func:`write_keys_days` for one key."""
    (counts,) = write_keys_days(session, [(api_key_id, rows)], days, chunk_size=chunk_size)
    return counts


def write_keys_days(
    session: Session,
    keys_rows: Sequence[tuple[int, Iterable[UsageRow]]],
    days: Iterable[dt.date],
    *,
    chunk_size: int = CHUNK_SIZE,
    plain_inserts: bool = False,
) -> list[WriteCounts]:
    """For each (api_key_id, rows): make the key's stored rows for ``days`` exactly ``rows``,
    in the caller's transaction; what each write did, in the same order.

    Each day in ``days`` was fetched, so it is the full truth for that day: new (date, model)
    pairs are inserted, changed ones updated, models no longer reported deleted, and unchanged
    rows are not sent at all. The keys share their statements (one read, one upsert, one
    delete per chunk), whatever their number. Rows dated outside ``days`` or a key given
    twice are programming errors.

    With ``plain_inserts``, rows read as absent go through :func:`send_inserts` rather than the
    upsert: faster, but the write fails if one of them appears meanwhile (see there).
    """
    day_set = set(days)
    dialect = session.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"unsupported database dialect {dialect!r}")
    sqlite_types = dialect == "sqlite"
    key_ids = [api_key_id for api_key_id, _ in keys_rows]
    if len(set(key_ids)) != len(key_ids):
        raise ValueError("a key is given twice: one entry per key")
    stored_by_key = _stored_wire(session, key_ids, day_set, sqlite_types)
    now = utcnow()
    # created_at as UTCDateTime binds it: naive UTC text on SQLite, timestamptz on PostgreSQL.
    created: Any = now.replace(tzinfo=None).isoformat(" ") if sqlite_types else now
    to_upsert: list[tuple[Any, ...]] = []
    to_insert = to_upsert if not plain_inserts else []
    vanished: list[int] = []
    all_counts: list[WriteCounts] = []
    for api_key_id, rows in keys_rows:
        stored = stored_by_key[api_key_id]
        if not stored and plain_inserts:
            # Nothing stored for these days (a key's first sync, or a new day): every row is
            # new. The same checks in set operations, and the tuples built in one pass.
            all_counts.append(
                _all_new(api_key_id, list(rows), day_set, sqlite_types, created, to_insert)
            )
            continue
        counts = WriteCounts()
        seen: set[tuple[dt.date, str]] = set()
        for row in rows:
            if row.date not in day_set:
                raise ValueError(f"row for {row.date} is outside the days being written")
            pair = (row.date, row.model)
            if pair in seen:
                raise ValueError(f"two rows for {row.model} on {row.date}: aggregate first")
            seen.add(pair)
            wire = _wire(row, sqlite_types)
            old = stored.get(pair)
            if old is not None and _same(old[1], row, wire):
                counts.unchanged += 1
                continue
            if old is None:
                counts.inserted += 1
                target = to_insert
            else:
                counts.updated += 1
                target = to_upsert
            target.append(
                (
                    api_key_id,
                    row.date.isoformat() if sqlite_types else row.date,
                    row.model,
                    *wire,
                    *((created,) if sqlite_types else ()),
                )
            )
        gone = [row_id for pair, (row_id, _) in stored.items() if pair not in seen]
        counts.deleted = len(gone)
        vanished.extend(gone)
        all_counts.append(counts)

    if plain_inserts and to_insert:
        send_inserts(session, to_insert, created, chunk_size=chunk_size)
    if to_upsert:
        send_upserts(session, to_upsert, created, chunk_size=chunk_size)
    table = USAGE
    for id_chunk in _chunks(vanished, chunk_size):
        session.execute(delete(table).where(table.c.id.in_(list(id_chunk))))
    return all_counts


# --- ledger ----------------------------------------------------------------------------------


def start_run(session: Session, trigger: str, *, started_at: dt.datetime | None = None) -> int:
    """Create a ``sync_runs`` row in status ``running``; returns its id."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r} (expected one of {', '.join(TRIGGERS)})")
    run = SyncRun(
        trigger=trigger,
        status="running",
        started_at=started_at or utcnow(),
        keys_ok=0,
        keys_failed=0,
    )
    session.add(run)
    session.flush()
    return run.id


def record_key_result(
    session: Session,
    run_id: int,
    api_key_id: int,
    *,
    status: str,
    counts: WriteCounts | None = None,
    http_requests: int = 0,
    error: str | None = None,
) -> None:
    """One key's outcome in a run (``ok`` or ``failed``)."""
    if status not in ("ok", "failed"):
        raise ValueError(f"unknown key status {status!r}")
    counts = counts or WriteCounts()
    # A constant Core insert with its values as parameters, not session.add() + flush(): the
    # ORM unit of work cost about half of a small key's write transaction.
    session.execute(
        _RECORD_KEY_RESULT,
        {
            "run_id": run_id,
            "api_key_id": api_key_id,
            "status": status,
            "rows_inserted": counts.inserted,
            "rows_updated": counts.updated,
            "rows_unchanged": counts.unchanged,
            "rows_deleted": counts.deleted,
            "http_requests": http_requests,
            "error": error,
            "finished_at": utcnow(),
        },
    )


@dataclass(frozen=True, slots=True)
class SyncedKey:
    """A key whose rows were just stored: what its ``api_keys`` row and ledger row record."""

    api_key_id: int
    counts: WriteCounts
    http_requests: int
    # The (digest, checksum) of the stored whole-window answer (see window_checksum), or
    # what was recorded before when the write left it valid.
    activity_digest: str | None
    activity_checksum: str | None


_MARK_KEYS_SYNCED = (
    update(KEYS)
    .where(KEYS.c.id == bindparam("key_id"))
    .values(
        kind=KEY_MANAGEMENT,
        last_used_at=bindparam("accepted_at"),
        activity_digest=bindparam("digest"),
        activity_checksum=bindparam("checksum"),
    )
)


def record_synced_keys(
    session: Session, run_id: int, synced: Sequence[SyncedKey], *, accepted_at: dt.datetime
) -> None:
    """For keys stored in the caller's transaction: mark each a management key accepted at
    ``accepted_at`` with its activity digest and checksum, and add its ``ok`` ledger row.

    Two executemany statements for the whole group, whatever its size: one statement per
    key and table cost about a quarter of a small key's write (measured).
    """
    if not synced:
        return
    session.execute(
        _MARK_KEYS_SYNCED,
        [
            {
                "key_id": key.api_key_id,
                "accepted_at": accepted_at,
                "digest": key.activity_digest,
                "checksum": key.activity_checksum,
            }
            for key in synced
        ],
    )
    finished_at = utcnow()
    session.execute(
        _RECORD_KEY_RESULT,
        [
            {
                "run_id": run_id,
                "api_key_id": key.api_key_id,
                "status": "ok",
                "rows_inserted": key.counts.inserted,
                "rows_updated": key.counts.updated,
                "rows_unchanged": key.counts.unchanged,
                "rows_deleted": key.counts.deleted,
                "http_requests": key.http_requests,
                "error": None,
                "finished_at": finished_at,
            }
            for key in synced
        ],
    )


def finish_run(
    session: Session, run_id: int, *, status: str, keys_ok: int, keys_failed: int
) -> None:
    """Close a run: ``ok``, ``failed`` (some key failed) or ``interrupted``."""
    if status not in ("ok", "failed", "interrupted"):
        raise ValueError(f"unknown run status {status!r}")
    session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id)
        .values(status=status, keys_ok=keys_ok, keys_failed=keys_failed, finished_at=utcnow())
    )


def interrupt_stale_runs(session: Session) -> list[int]:
    """Mark every run still ``running`` as ``interrupted``; returns their ids.

    Call it only while holding the sync lock (:mod:`worker.locking`): then no other process is
    syncing, so a run still marked running was cut short (killed, machine lost).
    """
    stale = list(
        session.execute(
            select(SyncRun.id).where(SyncRun.status == "running").order_by(SyncRun.id)
        ).scalars()
    )
    for run_id in stale:
        outcomes = list(
            session.execute(
                select(SyncKeyResult.status).where(SyncKeyResult.run_id == run_id)
            ).scalars()
        )
        finish_run(
            session,
            run_id,
            status="interrupted",
            keys_ok=outcomes.count("ok"),
            keys_failed=outcomes.count("failed"),
        )
    return stale
