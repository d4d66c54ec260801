"""`make bench`'s throughput scenario: how fast the sync writes, next to the raw driver's floor.

K keys × 30 days × M models × E endpoints, a first sync then an identical re-sync (every
answer byte for byte the one stored: the digest path of ``worker.sync.run``), on SQLite and on
a throw-away PostgreSQL. After them, in the same child process:

* the floor: the rows the sync stored, through the raw driver into an empty table of the same
  shape, in one transaction (``sqlite3.executemany`` of a plain INSERT, psycopg ``COPY``), with
  the foreign key ``usage_stats.api_key_id → api_keys`` unchecked (the issue's floor) and
  checked (as the worker cannot skip it);
* the write path alone: those rows written again through
  :func:`worker.store.usage_write.write_usage` in the sync's group-commit groups, with no fetch
  thread competing for the interpreter, as a share of the floor with the foreign key checked.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from harness import Findings, Row, fake_server, fmt_s, rate, run_child, scenario_db, sync_runs

COLUMNS = (
    "api_key_id, date, model, requests_count, tokens_input, tokens_output, tokens_reasoning, "
    "cost, byok_cost"
)


def _write_path(engine: Any, factory: Any) -> dict[str, float]:
    """The write path alone: the rows the first sync stored, emptied out of ``usage_stats`` and
    written again through :func:`worker.store.usage_write.write_usage`, in the groups the
    sync's group commit makes (one transaction each), with no fetch thread competing for the
    interpreter. Seconds of wall time and of this process's CPU time."""
    from sqlalchemy import text

    from worker.core.usage import UsageRow
    from worker.store.db import transaction
    from worker.store.models import to_money
    from worker.store.usage_write import KeyRows, write_usage
    from worker.sync.writes import GROUP_COMMIT_ROWS

    with engine.connect() as conn:
        stored = conn.execute(
            text(f"SELECT {COLUMNS} FROM usage_stats ORDER BY api_key_id, date, model")
        ).all()
    by_key: dict[int, list[Any]] = {}
    for key_id, day, *values in stored:
        day = day if isinstance(day, dt.date) else dt.date.fromisoformat(day)
        *counts, cost, byok = values
        by_key.setdefault(key_id, []).append(UsageRow(day, *counts, to_money(cost), to_money(byok)))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM usage_stats"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE usage_stats"))
    groups: list[list[Any]] = [[]]
    size = 0
    for key_id, rows in by_key.items():
        if size + len(rows) > GROUP_COMMIT_ROWS:
            groups.append([])
            size = 0
        days = frozenset(row.date for row in rows)
        groups[-1].append(KeyRows(key_id, rows, days))
        size += len(rows)
    started = time.perf_counter()
    cpu_started = time.process_time()
    for group in groups:
        with transaction(factory) as session:
            write_usage(session, group)
    return {
        "write_seconds": time.perf_counter() - started,
        "write_cpu_seconds": time.process_time() - cpu_started,
        "write_rows": len(stored),
    }


def _floor_sqlite(
    db_path: Path, rows: list[tuple[Any, ...]], workdir: Path, *, foreign_key: bool
) -> float:
    """Seconds for ``sqlite3.executemany`` of a plain INSERT of ``rows`` into an empty table of
    the same shape (same columns, indexes and unique constraint), one transaction, same
    pragmas as the worker.

    ``foreign_key``: also enforce ``usage_stats.api_key_id → api_keys`` as the worker does
    (``PRAGMA foreign_keys=ON``, the users and keys copied in); otherwise the foreign key stays
    declared but unchecked (sqlite3's default), the issue's floor.
    """
    src = sqlite3.connect(db_path)
    tables = ("users", "api_keys", "usage_stats") if foreign_key else ("usage_stats",)
    ddl = [
        sql
        for table in tables
        for (sql,) in src.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
            "ORDER BY type DESC",  # the table before its indexes
            (table,),
        )
    ]
    src.close()
    floor_path = workdir / "floor.db"
    floor_path.unlink(missing_ok=True)
    conn = sqlite3.connect(floor_path)
    conn.execute("PRAGMA journal_mode=WAL")
    for sql in ddl:
        conn.execute(sql)
    if foreign_key:
        conn.execute("ATTACH DATABASE ? AS src", (str(db_path),))
        conn.execute("INSERT INTO users SELECT * FROM src.users")
        conn.execute("INSERT INTO api_keys SELECT * FROM src.api_keys")
        conn.commit()
        conn.execute("DETACH DATABASE src")
        conn.execute("PRAGMA foreign_keys=ON")
    conn.commit()
    started = time.perf_counter()
    conn.executemany(
        f"INSERT INTO usage_stats ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
    )
    conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def _floor_postgres(dsn: str, rows: list[tuple[Any, ...]], *, foreign_key: bool) -> float:
    """Seconds for psycopg ``COPY`` of ``rows`` into an empty copy of ``usage_stats``
    (``LIKE … INCLUDING ALL``: same columns, defaults, indexes, unique constraint; not the
    foreign key, unless ``foreign_key``: then it is added, checked per row as the worker's)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS floor_usage")
        conn.execute("CREATE TABLE floor_usage (LIKE usage_stats INCLUDING ALL)")
        if foreign_key:
            conn.execute(
                "ALTER TABLE floor_usage ADD FOREIGN KEY (api_key_id) REFERENCES api_keys (id)"
            )
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY floor_usage ({COLUMNS}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE floor_usage")
        conn.commit()
        return elapsed


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process (``kind: throughput``): seed, sync twice, then the floors and the
    write path alone on the rows the sync stored."""
    workdir = Path(spec["workdir"])
    with scenario_db(spec) as db:
        result = sync_runs(db, spec)
        # The rows our sync stored, as the driver receives them, through the raw driver.
        select = f"SELECT {COLUMNS} FROM usage_stats ORDER BY id"
        if db.path is not None:
            with sqlite3.connect(db.path) as raw:
                rows = raw.execute(select).fetchall()
            result["floor_seconds"] = _floor_sqlite(db.path, rows, workdir, foreign_key=False)
            result["floor_fk_seconds"] = _floor_sqlite(db.path, rows, workdir, foreign_key=True)
        else:
            import psycopg

            with psycopg.connect(spec["dsn"]) as raw:
                rows = raw.execute(select).fetchall()
            result["floor_seconds"] = _floor_postgres(spec["dsn"], rows, foreign_key=False)
            result["floor_fk_seconds"] = _floor_postgres(spec["dsn"], rows, foreign_key=True)
        result["floor_rows"] = len(rows)
        result.update(_write_path(db.engine, db.factory))
    return result


def throughput(
    db: str, keys: int, models: int, endpoints: int, workdir: Path, pg: Any | None
) -> Findings:
    """The scenario on ``db`` (``sqlite`` or ``postgresql``, then on ``pg``'s server): the
    first sync, the re-sync and the two floors, as table rows."""
    spec: dict[str, Any] = {
        "kind": "throughput",
        "name": f"throughput-{db}",
        "db": db,
        "keys": keys,
        "concurrency": 8,
        "resync": True,
        "workdir": str(workdir),
    }
    if db == "postgresql":
        name = f"bench_throughput_{os.getpid()}"
        spec["db_url"] = pg.create_database(name)
        spec["dsn"] = pg.dsn(name)
    with fake_server(keys, models, endpoints, 0.0, workdir) as fake:
        spec["base_url"] = fake.base_url
        res = run_child(spec)
    first, again = res["runs"]
    source = keys * 30 * models * endpoints
    params = f"{db}, K={keys}, M={models}, E={endpoints}, {source:,} source rows, c=8"
    floor_rate = res["floor_rows"] / res["floor_seconds"]
    floor_fk_rate = res["floor_rows"] / res["floor_fk_seconds"]
    rows: list[Row] = []
    for label, run in (("first sync", first), ("re-sync", again)):
        written = run["inserted"] + run["updated"] + run["deleted"]
        figures = {
            "wall": fmt_s(run["wall"]),
            "rows/s written": rate(written, run["wall"]) if written else "0 (none written)",
            "HTTP req/key": f"{run['requests'] / keys:.2f}",
            "written / unchanged": f"{written:,} / {run['unchanged']:,}",
            "peak RSS": f"{res['peak_rss_mb']:.0f} MB",
        }
        if label == "first sync":
            write_rate = res["write_rows"] / res["write_seconds"]
            figures["write path alone"] = (
                f"{fmt_s(res['write_seconds'])}, {write_rate:,.0f} rows/s"
                f" = {write_rate / floor_fk_rate:.0%} of the floor (foreign key checked)"
            )
        if label == "re-sync":
            figures["vs first"] = f"{run['wall'] / first['wall']:.0%}"
        rows.append(Row(f"throughput {label}", params, figures))
    floor_name = "sqlite3.executemany INSERT" if db == "sqlite" else "psycopg COPY"
    for label, seconds, floor in (
        ("foreign key not checked", res["floor_seconds"], floor_rate),
        ("foreign key checked, as in the worker", res["floor_fk_seconds"], floor_fk_rate),
    ):
        rows.append(
            Row(
                f"floor {db}",
                f"{floor_name}, {res['floor_rows']:,} rows, empty table, {label}",
                {"wall": fmt_s(seconds), "rows/s written": f"{floor:,.0f}"},
            )
        )
    rows[0].figures["fake saw"] = f"{fake.stats.get('requests', 0) / keys / 2:.2f} req/key/sync"
    if db == "postgresql":
        pg.drop_database(f"bench_throughput_{os.getpid()}")
    return Findings(rows)
