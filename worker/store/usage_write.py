"""Writing usage rows: the one function the sync calls, and every driver-specific statement.

:func:`write_usage` makes an owner's stored rows for the days it was given exactly the fetched
(date, model) totals, in the caller's transaction. The owner is a registered key
(``usage_stats.api_key_id``) or a catalogued key of an account (``key_usage_stats.
account_key_id``): the same shape, the same write.

1. read the owners' stored rows for those days (one query per :data:`KEY_CHUNK` owners);
2. compare them with the fetched totals, as stored values;
3. insert the new rows, update the changed ones by id, delete the models no longer reported
   (within the limits :class:`KeyRows` sets); unchanged rows are not sent at all, so an
   unchanged re-sync writes nothing.

Why driver SQL here and nowhere else: SQLAlchemy's per-row, per-column bind and result
processing cost more than the database's own work for these bulk statements (measured by
``make bench``). New rows go in as a plain ``executemany`` INSERT on SQLite and a ``COPY`` on
PostgreSQL (dumped in C); the unique constraint on (owner, date, model) still guards them. A
row that appeared since it was read (a writer outside the sync; syncs hold the sync lock)
fails the transaction: the sync then writes that owner again alone, reading it afresh.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from worker.core.usage import VALUE_COLUMNS, UsageRow, WriteCounts
from worker.store.db import busy_error, is_locked
from worker.store.models import SOURCE_ACTIVITY, to_money, utcnow

# Owners per read statement, rows per write statement: round trips do not dominate, and one
# statement's parameters stay a few megabytes whatever the account's size.
KEY_CHUNK = 500
ROW_CHUNK = 5000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UsageTable:
    """A table of per-day, per-model usage rows and the column naming their owner."""

    name: str
    owner: str

    def columns(self) -> tuple[str, ...]:
        return (self.owner, "date", "model", *VALUE_COLUMNS, "source", "created_at")


USAGE_STATS = UsageTable("usage_stats", "api_key_id")
KEY_USAGE_STATS = UsageTable("key_usage_stats", "account_key_id")


@dataclass(frozen=True, slots=True)
class KeyRows:
    """One owner's fetched totals, and what they may change.

    ``rows`` (one per date and model) are inserted or updated; a stored model they no longer
    report is deleted only on ``delete_days`` (default: ``days``) and never before
    ``keep_before``. With ``max_delete_fraction``, an answer that would delete more than that
    share of the owner's stored rows on ``delete_days`` is held back whole (:class:`Withheld`).
    ``keep_source``: days holding a stored row from that source are left as they are (an
    analytics answer never overwrites what ``/activity`` reported).
    """

    owner_id: int
    rows: Sequence[UsageRow]
    days: frozenset[dt.date]  # every row's date is one of them
    delete_days: frozenset[dt.date] | None = None
    keep_before: dt.date | None = None
    max_delete_fraction: float | None = None
    keep_source: str | None = None


@dataclass(frozen=True, slots=True)
class Withheld:
    """An answer not applied: it would have deleted ``would_delete`` of the ``stored`` rows
    the owner holds on the days it answered for."""

    would_delete: int
    stored: int


# (row id, stored values, source) per (date, model)
_Stored = dict[tuple[dt.date, str], tuple[int, tuple[Any, ...], str]]


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Driver:
    """The sqlite3 or psycopg connection under the session's transaction, and its types.

    On SQLite money is a binary float (its NUMERIC affinity) and a date is ISO text; on
    PostgreSQL both are exact (``numeric``, ``date``). ``wire`` gives a row's values as the
    driver stores and returns them, so stored and fetched values compare as they are.
    """

    def __init__(self, session: Session, table: UsageTable) -> None:
        dialect = session.get_bind().dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"unsupported database dialect {dialect!r}")
        self.sqlite = dialect == "sqlite"
        self.mark = "?" if self.sqlite else "%s"
        self.table = table
        self.connection: Any = session.connection().connection.driver_connection
        now = utcnow()
        # created_at as UTCDateTime binds it: naive UTC text on SQLite, timestamptz elsewhere.
        self.created: Any = now.replace(tzinfo=None).isoformat(" ") if self.sqlite else now

    def day(self, day: dt.date) -> Any:
        return day.isoformat() if self.sqlite else day

    def wire(self, row: UsageRow) -> tuple[Any, ...]:
        if self.sqlite:
            return (*row[2:6], float(row.cost), float(row.byok_cost))
        return tuple(row[2:])

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)

    def execute(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one statement; the rows it returns (none for a write)."""
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def insert(self, rows: Sequence[tuple[Any, ...]]) -> None:
        columns = ", ".join(self.table.columns())
        for chunk in _chunks(rows, ROW_CHUNK):
            if self.sqlite:
                sql = f"INSERT INTO {self.table.name} ({columns}) VALUES ({self.marks(11)})"  # noqa: S608
                self.connection.executemany(sql, chunk)
            else:
                copy_sql = f"COPY {self.table.name} ({columns}) FROM STDIN"
                with self.connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
                    for values in chunk:
                        copy.write_row(values)

    def update(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows as (*values, source, id)."""
        if not rows:
            return
        sets = ", ".join(f"{name} = {self.mark}" for name in (*VALUE_COLUMNS, "source"))
        cursor = self.connection.cursor()
        try:
            cursor.executemany(
                f"UPDATE {self.table.name} SET {sets} WHERE id = {self.mark}",  # noqa: S608
                rows,
            )
        finally:
            cursor.close()

    def delete(self, row_ids: Sequence[int]) -> None:
        for ids in _chunks(row_ids, ROW_CHUNK):
            self.execute(
                f"DELETE FROM {self.table.name} WHERE id IN ({self.marks(len(ids))})",  # noqa: S608
                ids,
            )


def _same(stored: tuple[Any, ...], fetched: UsageRow, wire: tuple[Any, ...]) -> bool:
    """Equal as stored values: the exact driver values, else the quantized amounts (a float
    written by another tool, or 0.3 and 0.300000000, still compare equal)."""
    if stored == wire:
        return True
    return tuple(stored[:4]) == tuple(fetched[2:6]) and (
        to_money(stored[4] or 0),
        to_money(stored[5] or 0),
    ) == (to_money(fetched.cost), to_money(fetched.byok_cost))


def _read(driver: _Driver, owner_ids: Sequence[int], days: set[dt.date]) -> dict[int, _Stored]:
    """``{owner: {(date, model): (row id, stored values, source)}}`` for ``days``, every owner
    present; NULLs (rows written outside the worker) read as zero."""
    result: dict[int, _Stored] = {owner: {} for owner in owner_ids}
    if not days:
        return result
    by_wire = {driver.day(day): day for day in days}
    values = ", ".join(f"COALESCE({name}, 0)" for name in VALUE_COLUMNS)
    table = driver.table
    for ids in _chunks(list(owner_ids), KEY_CHUNK):
        sql = (
            f"SELECT {table.owner}, date, model, id, source, {values} "  # noqa: S608
            f"FROM {table.name} WHERE {table.owner} IN ({driver.marks(len(ids))}) "
            f"AND date IN ({driver.marks(len(by_wire))})"
        )
        for row in driver.execute(sql, (*ids, *by_wire)):
            result[row[0]][(by_wire[row[1]], row[2])] = (row[3], row[5:], row[4])
    return result


def write_usage(
    session: Session,
    batch: Sequence[KeyRows],
    *,
    table: UsageTable = USAGE_STATS,
    source: str = SOURCE_ACTIVITY,
) -> list[WriteCounts | Withheld]:
    """Apply each owner's fetched rows (see :class:`KeyRows`) to ``table`` in the caller's
    transaction, marking what it writes as coming from ``source``; what each write did, or
    that it was held back, in the order given.

    The owners share their statements (one read, one insert, one update, one delete per
    chunk). A row dated outside its owner's days, two rows for one (date, model) or an owner
    given twice are programming errors (``ValueError``).
    """
    owner_ids = [item.owner_id for item in batch]
    if len(set(owner_ids)) != len(owner_ids):
        raise ValueError("an owner is given twice: one entry per owner")
    try:
        return _write_usage(_Driver(session, table), batch, owner_ids, source)
    except sqlite3.OperationalError as exc:
        # The raw driver calls bypass the engine's error hook (worker.store.db): name the condition
        # the same way, so the key fails as database_busy, not as something unexpected.
        if is_locked(exc):
            url = session.get_bind().engine.url.render_as_string(hide_password=True)
            raise busy_error(url) from exc
        raise


def _write_usage(
    driver: _Driver, batch: Sequence[KeyRows], owner_ids: list[int], source: str
) -> list[WriteCounts | Withheld]:
    all_days = {day for item in batch for day in item.days}
    stored_by_owner = _read(driver, owner_ids, all_days)
    changes = _Changes(driver, {day: driver.day(day) for day in all_days}, source)
    all_counts: list[WriteCounts | Withheld] = []
    for item in batch:
        stored = stored_by_owner[item.owner_id]
        if item.days != all_days:  # owners of one batch usually share their days
            stored = {pair: value for pair, value in stored.items() if pair[0] in item.days}
        all_counts.append(changes.add(item, stored))
    driver.insert(changes.inserts)
    driver.update(changes.updates)
    driver.delete(changes.deletes)
    return all_counts


class _Changes:
    """The statements' rows, gathered owner by owner."""

    def __init__(self, driver: _Driver, day_wire: dict[dt.date, Any], source: str) -> None:
        self.driver = driver
        self.day_wire = day_wire
        self.source = source
        self.inserts: list[tuple[Any, ...]] = []
        self.updates: list[tuple[Any, ...]] = []
        self.deletes: list[int] = []

    def add(self, item: KeyRows, stored: _Stored) -> WriteCounts | Withheld:
        rows = item.rows
        outside = {row.date for row in rows} - item.days
        if outside:
            raise ValueError(f"row for {min(outside)} is outside the days being written")
        pairs = {(row.date, row.model) for row in rows}
        if len(pairs) != len(rows):
            raise ValueError(f"two rows for one model and day for {item.owner_id}: sum them")
        owner, wire, day_wire, created, source = (
            item.owner_id,
            self.driver.wire,
            self.day_wire,
            self.driver.created,
            self.source,
        )
        if not stored:
            # Nothing stored for these days (a key's first sync, a new day): all rows are new.
            self.inserts.extend(
                (owner, day_wire[row.date], row.model, *wire(row), source, created) for row in rows
            )
            return WriteCounts(inserted=len(rows))
        kept_days: set[dt.date] = set()
        if item.keep_source is not None:
            kept_days = {pair[0] for pair, (_i, _v, s) in stored.items() if s == item.keep_source}
        delete_days = item.days if item.delete_days is None else item.delete_days
        on_delete_days = [
            (pair, row_id)
            for pair, (row_id, _v, _s) in stored.items()
            if pair[0] in delete_days and pair[0] not in kept_days
        ]
        missing = [(pair, row_id) for pair, row_id in on_delete_days if pair not in pairs]
        fraction = item.max_delete_fraction
        if fraction is not None and len(missing) > fraction * len(on_delete_days):
            return Withheld(would_delete=len(missing), stored=len(on_delete_days))
        counts = WriteCounts()
        for row in rows:
            if row.date in kept_days:
                counts.kept += 1
                continue
            values = wire(row)
            old = stored.get((row.date, row.model))
            if old is None:
                counts.inserted += 1
                self.inserts.append(
                    (owner, day_wire[row.date], row.model, *values, source, created)
                )
            elif old[2] == source and _same(old[1], row, values):
                counts.unchanged += 1
            else:
                counts.updated += 1
                self.updates.append((*values, source, old[0]))
        keep_before = item.keep_before
        gone = [row_id for pair, row_id in missing if keep_before is None or pair[0] >= keep_before]
        counts.deleted = len(gone)
        counts.kept += len(missing) - len(gone)
        self.deletes.extend(gone)
        return counts
