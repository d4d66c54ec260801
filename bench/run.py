"""`make bench`: the ETL's speed, cost and memory as the work grows (figures, never a test).

Scenarios (issue 7), each one table row with its parameters:

* ``throughput``: K keys × 30 days × M models × E endpoints, a first sync then an identical
  re-sync, on SQLite and on a throw-away PostgreSQL; with the raw-driver floor for the same
  rows (``sqlite3.executemany`` of a plain INSERT, psycopg ``COPY``) and our write phase as a
  ratio of it;
* ``latency``: the fake answers after 50 ms; K keys at several concurrencies, next to the ideal
  ``K × 0.05 s / concurrency``;
* ``scale``: K = 100 … 5,000 keys (10 models, 1 endpoint): wall time and peak RSS per K;
* ``account`` and ``history import``: see ``bench/accounts.py``;
* ``CLI start``: the read-only commands against ``python -c pass``: see ``bench/cli_start.py``.

Layout: this process (the orchestrator) starts PostgreSQL once, and per scenario a fake
OpenRouter in its own process (so its GIL time never counts against the sync) and the scenario
itself in a fresh process, whose peak RSS (``ru_maxrss``) is therefore that scenario's alone.
Keys are stored encrypted like in production, and the real :func:`worker.sync.run_sync` runs.

``BENCH_SCALE=small`` runs smaller parameters in about a minute. Results go to stdout and to
``bench/results.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results.md"
TODAY = dt.date(2026, 5, 1)  # fixed: the data (and so every figure) is the same run after run
VARIANTS = 8  # distinct activity data sets, shared round-robin by the keys (fake's memory)
LATENCY = 0.05


def key_secret(index: int) -> str:
    """The fake OpenRouter key of bench key ``index`` (the shape of a real one)."""
    return f"sk-or-v1-{index:064x}"


# --- the fake OpenRouter process ---------------------------------------------------------------


def serve(spec_path: Path) -> int:
    """Serve a :class:`FakeOpenRouter` with ``spec['keys']`` keys until SIGTERM.

    Bodies are rendered once per (data variant, query) and reused: the fake's own per-request
    JSON rendering would otherwise cost more CPU than the sync being measured. Everything else
    (routing, key check, day filter, latency) is the fake's own code.
    """
    from worker.testing import fake_openrouter
    from worker.testing.activity_data import generate_activity
    from worker.testing.fake_openrouter import FakeOpenRouter

    # The fake writes headers and body in two send() calls: without TCP_NODELAY, Nagle's
    # algorithm and the client's delayed ACK hold the body ~40 ms (measured: 99 ms per key
    # at concurrency 1 with a 50 ms latency). This process only serves the bench.
    fake_openrouter._Handler.disable_nagle_algorithm = True

    spec = json.loads(spec_path.read_text())
    if "account" in spec:
        from bench import accounts

        return accounts.serve(spec)
    today = dt.date.fromisoformat(spec["today"])

    class CachedFake(FakeOpenRouter):
        def __init__(self) -> None:
            super().__init__(today=today, latency=spec.get("latency", 0.0))
            self.cache: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[int, str]] = {}

        def _activity(self, key: Any, query: dict[str, str]) -> tuple[int, str]:
            cache_key = (id(key.rows), tuple(sorted(query.items())))
            hit = self.cache.get(cache_key)
            if hit is None:
                hit = self.cache[cache_key] = super()._activity(key, query)
            return hit

    fake = CachedFake()
    variants = [
        generate_activity(
            today=today, days=30, models=spec["models"], endpoints=spec["endpoints"], seed=seed
        )
        for seed in range(VARIANTS)
    ]
    for index in range(spec["keys"]):
        fake.add_key(key_secret(index), rows=variants[index % VARIANTS])
        # add_key copies the list; share one list per variant so the cache key is shared too.
        fake._keys[key_secret(index)].rows = variants[index % VARIANTS]
    done = False

    def on_signal(*_: object) -> None:
        nonlocal done
        done = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with fake:
        print(fake.base_url, flush=True)
        while not done:
            time.sleep(0.2)
        print(json.dumps({"requests": fake.request_count()}), flush=True)
    return 0


@contextmanager
def fake_server(
    keys: int, models: int, endpoints: int, latency: float, workdir: Path
) -> Iterator[tuple[str, dict[str, int]]]:
    """A fake OpenRouter process with K management keys; yields its base URL and a dict
    filled with its request count when it stops."""
    spec = {"keys": keys, "models": models, "endpoints": endpoints, "latency": latency}
    with fake_process(spec, workdir) as served:
        yield served


@contextmanager
def fake_process(spec: dict[str, Any], workdir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The fake OpenRouter ``spec`` describes, in its own process (``serve``)."""
    path = workdir / f"fake-{abs(hash(json.dumps(spec, sort_keys=True)))}.json"
    path.write_text(json.dumps({**spec, "today": TODAY.isoformat()}))
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    stats: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError("the fake OpenRouter did not start")
        yield base_url, stats
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        for line in out.splitlines():
            if line.startswith("{"):
                stats.update(json.loads(line))


# --- one scenario, in its own process ----------------------------------------------------------


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: this process's high-water mark.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _open(db_url: str, master_key: str) -> tuple[Any, Any, Any]:
    """Engine, session factory and keyring for a prepared database."""
    from worker.store.db import create_db_engine, make_session_factory
    from worker.vault.crypto import Keyring, decode_master_key

    engine = create_db_engine(db_url)
    keyring = Keyring(decode_master_key(master_key, "bench"))
    return engine, make_session_factory(engine), keyring


def prepare(spec: dict[str, Any]) -> None:
    """Migrate, then K active management keys (one user per 10 keys), encrypted like
    ``keys add`` does (the row id is in the ciphertext's associated data).

    Run in its own process before the scenario's: seeding thousands of keys through the ORM
    leaves memory the interpreter keeps (about 10 MB more at 2,000 keys than at 100,
    measured), which would count in the scenario's peak RSS although the sync never used it.
    """
    from worker.store.db import init_db, transaction
    from worker.store.models import ApiKey, User

    keys = spec["keys"]
    engine, factory, keyring = _open(spec["db_url"], spec["master_key"])
    init_db(engine)
    with transaction(factory) as session:
        users = [
            User(email=f"user{n}@bench.example", password_hash="!")  # noqa: S106 - no login
            for n in range((keys + 9) // 10)
        ]
        session.add_all(users)
        session.flush()
        rows = [
            ApiKey(
                user_id=users[i // 10].id, name=f"key-{i}", key_encrypted="pending", is_active=True
            )
            for i in range(keys)
        ]
        session.add_all(rows)
        session.flush()
        for index, row in enumerate(rows):
            row.key_encrypted = keyring.encrypt(
                key_secret(index), user_id=row.user_id, key_id=row.id
            )
    engine.dispose()


def _sync(factory: Any, keyring: Any, base_url: str, concurrency: int) -> dict[str, Any]:
    from worker.config import Settings
    from worker.sync.run import run_sync

    # history_days=0: these scenarios measure /activity; the year of history has its own.
    settings = (
        Settings()
        .replace("openrouter", base_url=base_url)
        .replace("sync", concurrency=concurrency, history_days=0)
    )
    started = time.perf_counter()
    cpu_started = time.process_time()
    summary = run_sync(factory, settings, keyring, trigger="sync")
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    counts = summary.counts
    return {
        "wall": wall,
        "cpu": cpu,
        "status": summary.status,
        "keys_ok": summary.keys_ok,
        "keys_failed": summary.keys_failed,
        "requests": summary.requests,
        "inserted": counts.inserted,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "deleted": counts.deleted,
    }


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
            text(
                "SELECT api_key_id, date, model, requests_count, tokens_input, tokens_output, "
                "tokens_reasoning, cost, byok_cost FROM usage_stats ORDER BY api_key_id, date, "
                "model"
            )
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
        "INSERT INTO usage_stats (api_key_id, date, model, requests_count, tokens_input, "
        "tokens_output, tokens_reasoning, cost, byok_cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
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
            cur.copy(
                "COPY floor_usage (api_key_id, date, model, requests_count, tokens_input, "
                "tokens_output, tokens_reasoning, cost, byok_cost) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE floor_usage")
        conn.commit()
        return elapsed


def scenario(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario (in a fresh process) and return its figures."""
    if spec.get("http_only"):
        return http_only(spec)
    if spec.get("account_scenario"):
        from bench import accounts

        return accounts.scenario(spec, Path(spec["workdir"]))
    from sqlalchemy import text

    from worker.core.logs import configure_logging

    # Production logging (INFO, JSON, one line per key) into the void.
    configure_logging("INFO", "json", open(os.devnull, "w"))
    workdir = Path(spec["workdir"])
    if spec["db"] == "sqlite":
        db_path = workdir / f"{spec['name']}.db"
        db_path.unlink(missing_ok=True)
        db_url = f"sqlite:///{db_path}"
    else:
        db_url = spec["db_url"]
    from worker.vault.crypto import generate_master_key

    master_key = generate_master_key()
    subprocess.run(
        [
            sys.executable,
            __file__,
            "prepare",
            json.dumps({"db_url": db_url, "keys": spec["keys"], "master_key": master_key}),
        ],
        cwd=ROOT,
        check=True,
    )
    engine, factory, keyring = _open(db_url, master_key)
    baseline_rss = _peak_rss_mb()
    result: dict[str, Any] = {"baseline_rss_mb": baseline_rss}
    runs = [_sync(factory, keyring, spec["base_url"], spec["concurrency"])]
    if spec.get("resync"):
        runs.append(_sync(factory, keyring, spec["base_url"], spec["concurrency"]))
    result["runs"] = runs
    result["peak_rss_mb"] = _peak_rss_mb()
    with engine.connect() as conn:
        result["stored_rows"] = conn.execute(text("SELECT count(*) FROM usage_stats")).scalar()
    if spec.get("floor"):
        # The rows our sync stored, as the driver receives them, through the raw driver.
        cols = (
            "api_key_id, date, model, requests_count, tokens_input, tokens_output, "
            "tokens_reasoning, cost, byok_cost"
        )
        if spec["db"] == "sqlite":
            with sqlite3.connect(db_path) as raw:
                rows = raw.execute(f"SELECT {cols} FROM usage_stats ORDER BY id").fetchall()
            result["floor_seconds"] = _floor_sqlite(db_path, rows, workdir, foreign_key=False)
            result["floor_fk_seconds"] = _floor_sqlite(db_path, rows, workdir, foreign_key=True)
        else:
            import psycopg

            with psycopg.connect(spec["dsn"]) as raw:
                rows = raw.execute(f"SELECT {cols} FROM usage_stats ORDER BY id").fetchall()
            result["floor_seconds"] = _floor_postgres(spec["dsn"], rows, foreign_key=False)
            result["floor_fk_seconds"] = _floor_postgres(spec["dsn"], rows, foreign_key=True)
        result["floor_rows"] = len(rows)
        result.update(_write_path(engine, factory))
    engine.dispose()
    return result


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One scenario in a fresh interpreter (its peak RSS is its own)."""
    # The worker's clock pinned to TODAY (the testing hook of worker.core.days): the data, and so
    # every figure, is the same whatever the date.
    env = {**os.environ, "OPENROUTER_WATCHER_TESTING_CLOCK": f"{TODAY.isoformat()}T12:00:00Z"}
    proc = subprocess.run(
        [sys.executable, __file__, "scenario", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scenario {spec['name']} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- the orchestrator --------------------------------------------------------------------------

SCALES: dict[str, dict[str, Any]] = {
    "full": {
        "throughput": (200, 20, 2),
        "latency_keys": 500,
        "concurrency": (1, 8, 32, 100),
        "http_only_concurrency": (32, 100),
        "scale": (100, 1000, 5000),
        "account": (1000, 3),  # keys, models
        "history": (100, 20),
    },
    "small": {
        "throughput": (40, 20, 2),
        "latency_keys": 200,
        "concurrency": (8, 32, 100),
        "http_only_concurrency": (32, 100),
        "scale": (100, 500, 1000),
        "account": (200, 3),
        "history": (10, 5),
    },
}


@dataclass
class Row:
    scenario: str
    params: str
    figures: dict[str, str] = field(default_factory=dict)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _rate(rows: int, seconds: float | None) -> str:
    return f"{rows / seconds:,.0f}" if seconds else "n/a"


def throughput(
    db: str, keys: int, models: int, endpoints: int, workdir: Path, pg: Any | None
) -> list[Row]:
    spec: dict[str, Any] = {
        "name": f"throughput-{db}",
        "db": db,
        "keys": keys,
        "concurrency": 8,
        "resync": True,
        "floor": True,
        "workdir": str(workdir),
    }
    if db == "postgresql":
        name = f"bench_throughput_{os.getpid()}"
        spec["db_url"] = pg.create_database(name)
        spec["dsn"] = pg.dsn(name)
    with fake_server(keys, models, endpoints, 0.0, workdir) as (base_url, stats):
        spec["base_url"] = base_url
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
            "wall": _fmt_s(run["wall"]),
            "rows/s written": _rate(written, run["wall"]) if written else "0 (none written)",
            "HTTP req/key": f"{run['requests'] / keys:.2f}",
            "written / unchanged": f"{written:,} / {run['unchanged']:,}",
            "peak RSS": f"{res['peak_rss_mb']:.0f} MB",
        }
        if label == "first sync":
            write_rate = res["write_rows"] / res["write_seconds"]
            figures["write path alone"] = (
                f"{_fmt_s(res['write_seconds'])}, {write_rate:,.0f} rows/s"
                f" = {write_rate / floor_fk_rate:.0%} of the floor (foreign key checked)"
            )
        if label == "re-sync":
            figures["vs first"] = f"{run['wall'] / first['wall']:.0%}"
        rows.append(Row(f"throughput {label}", params, figures))
    floor_name = "sqlite3.executemany INSERT" if db == "sqlite" else "psycopg COPY"
    for label, seconds, rate in (
        ("foreign key not checked", res["floor_seconds"], floor_rate),
        ("foreign key checked, as in the worker", res["floor_fk_seconds"], floor_fk_rate),
    ):
        rows.append(
            Row(
                f"floor {db}",
                f"{floor_name}, {res['floor_rows']:,} rows, empty table, {label}",
                {"wall": _fmt_s(seconds), "rows/s written": f"{rate:,.0f}"},
            )
        )
    rows[0].figures["fake saw"] = f"{stats.get('requests', 0) / keys / 2:.2f} req/key/sync"
    if db == "postgresql":
        pg.drop_database(f"bench_throughput_{os.getpid()}")
    return rows


def _cpu_share(run: dict[str, Any]) -> str:
    return f"{_fmt_s(run['cpu'])} ({run['cpu'] / run['wall']:.0%} of wall)"


def http_only(spec: dict[str, Any]) -> dict[str, Any]:
    """The latency-bound fetches alone: the sync's thread pool and shared client, each thread
    taking the next key, but no decryption, summing or database. What the HTTP client costs,
    as a floor under the latency-bound sync."""
    from concurrent.futures import ThreadPoolExecutor

    from worker.config import Settings
    from worker.openrouter import OpenRouterClient

    settings = Settings().replace("openrouter", base_url=spec["base_url"]).openrouter
    secrets = [key_secret(index) for index in range(spec["keys"])]
    concurrency = spec["concurrency"]
    started = time.perf_counter()
    cpu_started = time.process_time()
    with (
        OpenRouterClient(settings) as client,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        requests = sum(answer.requests for answer in pool.map(client.get_activity, secrets))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    run = {"wall": wall, "cpu": cpu, "requests": requests}
    return {"runs": [run], "peak_rss_mb": _peak_rss_mb()}


def latency(
    keys: int,
    concurrencies: tuple[int, ...],
    http_only_concurrencies: tuple[int, ...],
    workdir: Path,
) -> list[Row]:
    rows = []
    runs = [(False, concurrency) for concurrency in concurrencies] + [
        (True, concurrency) for concurrency in http_only_concurrencies
    ]
    with fake_server(keys, 1, 1, LATENCY, workdir) as (base_url, _stats):
        for http_alone, concurrency in runs:
            res = run_child(
                {
                    "name": f"latency-{'http-' if http_alone else ''}{concurrency}",
                    "http_only": http_alone,
                    "db": "sqlite",
                    "keys": keys,
                    "concurrency": concurrency,
                    "workdir": str(workdir),
                    "base_url": base_url,
                }
            )
            run = res["runs"][0]
            ideal = keys * LATENCY / concurrency
            figures = {
                "wall": _fmt_s(run["wall"]),
                "ideal": _fmt_s(ideal),
                "× ideal": f"{run['wall'] / ideal:.2f}",
                "sync CPU": _cpu_share(run),
                "HTTP req/key": f"{run['requests'] / keys:.2f}",
            }
            if http_alone:
                scenario = "latency-bound, HTTP only"
                params = (
                    f"K={keys}, 50 ms/answer, concurrency {concurrency}: the fetches alone "
                    "(no decryption, validation or database)"
                )
            else:
                scenario = "latency-bound"
                params = f"sqlite, K={keys}, 50 ms/answer, concurrency {concurrency}, 30 rows/key"
                figures["peak RSS"] = f"{res['peak_rss_mb']:.0f} MB"
            rows.append(Row(scenario, params, figures))
    return rows


def scale(sizes: tuple[int, ...], workdir: Path) -> list[Row]:
    rows = []
    base_rss = None
    for keys in sizes:
        with fake_server(keys, 10, 1, 0.0, workdir) as (base_url, _stats):
            res = run_child(
                {
                    "name": f"scale-{keys}",
                    "db": "sqlite",
                    "keys": keys,
                    "concurrency": 8,
                    "workdir": str(workdir),
                    "base_url": base_url,
                }
            )
        run = res["runs"][0]
        written = run["inserted"] + run["updated"] + run["deleted"]
        rss = res["peak_rss_mb"]
        base_rss = base_rss or rss
        rows.append(
            Row(
                "scale",
                f"sqlite, K={keys:,}, M=10, E=1, first sync, c=8",
                {
                    "wall": _fmt_s(run["wall"]),
                    "rows/s written": _rate(written, run["wall"]),
                    "written / unchanged": f"{written:,} / {run['unchanged']:,}",
                    "HTTP req/key": f"{run['requests'] / keys:.2f}",
                    "ms/key": f"{run['wall'] / keys * 1000:.2f}",
                    "peak RSS": f"{rss:.0f} MB ({rss / base_rss - 1:+.0%} vs K={sizes[0]})",
                },
            )
        )
    return rows


def machine(pg: Any | None) -> dict[str, str]:
    from importlib.metadata import version

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg.version() if pg else "not available",
        "sqlalchemy": version("sqlalchemy"),
        "psycopg": version("psycopg"),
        "httpx": version("httpx"),
    }


COLUMNS = (
    "wall",
    "vs python -c pass",
    "requests",
    "rows/s written",
    "write path alone",
    "written / unchanged",
    "vs first",
    "HTTP req/key",
    "fake saw",
    "ideal",
    "× ideal",
    "sync CPU",
    "ms/key",
    "peak RSS",
)


def render(rows: list[Row], info: dict[str, str], scale_name: str, elapsed: float) -> str:
    cols = [c for c in COLUMNS if any(c in r.figures for r in rows)]
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` (BENCH_SCALE={scale_name}) on {info['date']} "
        f"in {elapsed:.0f} s.",
        "",
        f"Machine: nproc {info['nproc']}, Python {info['python']}, SQLite "
        f"{info['sqlite']}, PostgreSQL {info['postgresql']} (throw-away server, fsync "
        f"off); SQLAlchemy {info['sqlalchemy']}, psycopg {info['psycopg']}, httpx "
        f"{info['httpx']}.",
        "",
        "| scenario | parameters | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for row in rows:
        lines.append(
            f"| {row.scenario} | {row.params} | "
            + " | ".join(row.figures.get(c, "") for c in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    scale_name = os.environ.get("BENCH_SCALE", "full")
    if scale_name not in SCALES:
        print(
            f"BENCH_SCALE must be one of {', '.join(SCALES)}, got {scale_name!r}", file=sys.stderr
        )
        return 2
    params = SCALES[scale_name]
    from worker.testing.postgres import PostgresServer, find_bindir

    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="orw-bench-") as tmp:
        workdir = Path(tmp)
        bindir = find_bindir()
        pg = PostgresServer(bindir).start() if bindir else None
        try:
            info = machine(pg)
            keys, models, endpoints = params["throughput"]
            from bench import accounts, cli_start

            def add(new: list[Row]) -> None:
                for row in new:
                    print(
                        f"{row.scenario:<22} {row.params}: "
                        + ", ".join(f"{k} {v}" for k, v in row.figures.items()),
                        flush=True,
                    )
                rows.extend(new)

            add(cli_start.rows(workdir))
            add(throughput("sqlite", keys, models, endpoints, workdir, None))
            if pg is not None:
                add(throughput("postgresql", keys, models, endpoints, workdir, pg))
            else:
                print("PostgreSQL not found (set PG_BINDIR): skipping its scenario")
            add(
                latency(
                    params["latency_keys"],
                    params["concurrency"],
                    params["http_only_concurrency"],
                    workdir,
                )
            )
            add(scale(params["scale"], workdir))
            add(accounts.rows(params, workdir))
        finally:
            if pg is not None:
                pg.stop()
    table = render(rows, info, scale_name, time.perf_counter() - started)
    print()
    print(table)
    RESULTS.write_text(table)
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) a fake OpenRouter process")
    serve_parser.add_argument("spec", type=Path)
    scenario_parser = sub.add_parser("scenario", help="(internal) one scenario, JSON spec")
    scenario_parser.add_argument("spec")
    prepare_parser = sub.add_parser("prepare", help="(internal) seed a scenario's database")
    prepare_parser.add_argument("spec")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(json.loads(args.spec))
        sys.exit(0)
    if args.command == "serve":
        sys.exit(serve(args.spec))
    if args.command == "scenario":
        print(json.dumps(scenario(json.loads(args.spec)), default=str))
        sys.exit(0)
    sys.exit(main())
