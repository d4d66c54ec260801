"""What every scenario of ``make bench`` shares: the fake OpenRouter process, the scenario's
fresh interpreter and seeded database, one timed ``run_sync``, and the table's pieces.

* :func:`fake_process` starts a fake OpenRouter in its own process (so its CPU and GIL time
  never count against the sync) and yields a :class:`Fake`, which can ask it how many requests
  it has answered so far;
* :func:`run_child` runs one scenario in a fresh interpreter (its peak RSS is its own), whose
  database :func:`scenario_db` has another short-lived process seed first (:func:`prepare`);
* :func:`sync_run` is one real :func:`worker.sync.run.run_sync`, timed;
* :class:`Row` (a line of the table), :class:`Guard` (a line of the guard table) and the
  formatting helpers.

Dependencies point one way: this module imports no other of ``bench/``, the scenario modules
import it, and ``run.py`` imports them. Every child process is ``python bench/run.py …``
(:data:`ENTRY`), which hands it to the scenario module concerned. At module level, only the
standard library is imported: a child must not pay for (nor hold the memory of) a worker
module its scenario does not use.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENTRY = ROOT / "bench" / "run.py"  # every child process: `python bench/run.py COMMAND SPEC`
TODAY = dt.date(2026, 5, 1)  # fixed: the data (and so every figure) is the same run after run
VARIANTS = 8  # distinct activity data sets, shared round-robin by the keys (fake's memory)
LATENCY = 0.05  # the latency-bound scenarios' delay per answer, seconds


def key_secret(index: int) -> str:
    """The fake OpenRouter key of bench key ``index`` (the shape of a real one)."""
    return f"sk-or-v1-{index:064x}"


# --- the table ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: a scenario, its parameters, its figures by column."""

    scenario: str
    params: str
    figures: dict[str, str] = field(default_factory=dict)


@dataclass
class Guard:
    """One guard line: a figure next to what it is held against, the ratio and the target."""

    name: str
    params: str
    figure: str
    against: str
    ratio: str
    target: str
    met: bool


@dataclass
class Findings:
    """What one scenario module adds to ``bench/results.md``."""

    rows: list[Row] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def rate(rows: int, seconds: float | None) -> str:
    return f"{rows / seconds:,.0f}" if seconds else "n/a"


def cpu_share(run: dict[str, Any]) -> str:
    return f"{fmt_s(run['cpu'])} ({run['cpu'] / run['wall']:.0%} of wall)"


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


# --- the fake OpenRouter process ---------------------------------------------------------------


def serve_until_stopped(fake: Any, final: Callable[[], dict[str, Any]]) -> int:
    """Serve ``fake`` until SIGTERM: its base URL first on stdout, then on each SIGUSR1 a line
    ``{"requests": N}`` (the requests answered so far), and at the end ``final()``'s JSON."""
    stopping: list[bool] = []
    asked: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGUSR1, lambda *_: asked.append(True))
    with fake:
        print(fake.base_url, flush=True)
        while not stopping:
            if asked:
                # Cleared before answering: the orchestrator asks again only once answered.
                asked.clear()
                print(json.dumps({"requests": fake.request_count()}), flush=True)
            time.sleep(0.05)
        print(json.dumps(final()), flush=True)
    return 0


def serve(spec: dict[str, Any]) -> int:
    """A :class:`FakeOpenRouter` with ``spec['keys']`` management keys, until SIGTERM.

    Each ``/activity`` body is rendered once per (data variant, query) and reused: the fake's
    own per-request JSON rendering would otherwise cost more CPU than the sync being measured.
    Everything else (routing, key check, day filter, latency) is the fake's own code. (Nagle's
    algorithm is off in the fake's own handler: its two writes per answer would otherwise
    wait ~40 ms for the client's delayed ACK.)
    """
    from worker.testing.activity_data import generate_activity
    from worker.testing.fake_openrouter import FakeOpenRouter

    today = dt.date.fromisoformat(spec["today"])

    class CachedFake(FakeOpenRouter):
        def __init__(self) -> None:
            super().__init__(today=today, latency=spec.get("latency", 0.0))
            self.cache: dict[tuple[int, tuple[tuple[str, str], ...]], Any] = {}

        def _route(
            self, raw: bytes, method: str, path: str, query: dict[str, str], key: Any
        ) -> Any:
            if key is None or key.account is not None or not path.endswith("/activity"):
                return super()._route(raw, method, path, query, key)
            cache_key = (id(key.rows), tuple(sorted(query.items())))
            hit = self.cache.get(cache_key)
            if hit is None:
                hit = self.cache[cache_key] = super()._route(raw, method, path, query, key)
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
    return serve_until_stopped(fake, lambda: {"requests": fake.request_count()})


@dataclass
class Fake:
    """A running fake OpenRouter process: its base URL; ``stats`` is filled when it stops."""

    base_url: str
    process: subprocess.Popen[str]
    stats: dict[str, Any] = field(default_factory=dict)

    def requests(self) -> int:
        """The requests it has answered so far (asked by SIGUSR1)."""
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGUSR1)
        return int(json.loads(self.process.stdout.readline())["requests"])


@contextmanager
def fake_process(spec: dict[str, Any], workdir: Path) -> Iterator[Fake]:
    """The fake OpenRouter ``spec`` describes, in its own process (``run.py serve``)."""
    path = workdir / f"fake-{abs(hash(json.dumps(spec, sort_keys=True)))}.json"
    path.write_text(json.dumps({**spec, "today": TODAY.isoformat()}))
    proc = subprocess.Popen(
        [sys.executable, str(ENTRY), "serve", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    stats: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError("the fake OpenRouter did not start")
        yield Fake(base_url, proc, stats)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        for line in out.splitlines():
            if line.startswith("{"):
                stats.update(json.loads(line))


@contextmanager
def fake_server(
    keys: int, models: int, endpoints: int, latency: float, workdir: Path
) -> Iterator[Fake]:
    """A fake OpenRouter process with K management keys (:func:`serve`)."""
    spec = {"keys": keys, "models": models, "endpoints": endpoints, "latency": latency}
    with fake_process(spec, workdir) as fake:
        yield fake


# --- one scenario, in its own process ----------------------------------------------------------


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One scenario (``spec['kind']``) in a fresh interpreter; its figures."""
    # The worker's clock pinned to TODAY (the testing hook of worker.core.days): the data, and so
    # every figure, is the same whatever the date.
    env = {**os.environ, "OPENROUTER_WATCHER_TESTING_CLOCK": f"{TODAY.isoformat()}T12:00:00Z"}
    proc = subprocess.run(
        [sys.executable, str(ENTRY), "scenario", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scenario {spec['name']} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: this process's high-water mark.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_db(db_url: str, master_key: str) -> tuple[Any, Any, Any]:
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
    engine, factory, keyring = open_db(spec["db_url"], spec["master_key"])
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


@dataclass
class Database:
    """A scenario's seeded database, opened."""

    url: str
    path: Path | None  # SQLite's file
    engine: Any
    factory: Any
    keyring: Any


@contextmanager
def scenario_db(spec: dict[str, Any]) -> Iterator[Database]:
    """The scenario's database (SQLite in the workdir, or ``spec['db_url']``) with
    ``spec['keys']`` keys, seeded by another process (:func:`prepare`); production logging
    (INFO, JSON, one line per key) configured into the void."""
    from worker.core.logs import configure_logging
    from worker.vault.crypto import generate_master_key

    configure_logging("INFO", "json", open(os.devnull, "w"))
    path: Path | None = None
    if spec.get("db", "sqlite") == "sqlite":
        path = Path(spec["workdir"]) / f"{spec['name']}.db"
        path.unlink(missing_ok=True)
        db_url = f"sqlite:///{path}"
    else:
        db_url = spec["db_url"]
    master_key = generate_master_key()
    seed = {"db_url": db_url, "keys": spec["keys"], "master_key": master_key}
    subprocess.run([sys.executable, str(ENTRY), "prepare", json.dumps(seed)], cwd=ROOT, check=True)
    engine, factory, keyring = open_db(db_url, master_key)
    try:
        yield Database(db_url, path, engine, factory, keyring)
    finally:
        engine.dispose()


def sync_run(db: Database, base_url: str, concurrency: int) -> dict[str, Any]:
    """One :func:`worker.sync.run.run_sync` of every key (no history import: these scenarios
    measure ``/activity``; the year of history has its own): wall time, the process's CPU
    time (every thread) and the summary's figures."""
    from worker.config import Settings
    from worker.sync.run import run_sync

    settings = (
        Settings()
        .replace("openrouter", base_url=base_url)
        .replace("sync", concurrency=concurrency, history_days=0)
    )
    started = time.perf_counter()
    cpu_started = time.process_time()
    summary = run_sync(db.factory, settings, db.keyring, trigger="sync")
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


def sync_runs(db: Database, spec: dict[str, Any]) -> dict[str, Any]:
    """The sync (and, with ``spec['resync']``, an identical second one), the peak RSS and the
    rows stored."""
    from sqlalchemy import text

    result: dict[str, Any] = {"baseline_rss_mb": peak_rss_mb()}
    runs = [sync_run(db, spec["base_url"], spec["concurrency"])]
    if spec.get("resync"):
        runs.append(sync_run(db, spec["base_url"], spec["concurrency"]))
    result["runs"] = runs
    result["peak_rss_mb"] = peak_rss_mb()
    with db.engine.connect() as conn:
        result["stored_rows"] = conn.execute(text("SELECT count(*) FROM usage_stats")).scalar()
    return result


def sync_scenario(spec: dict[str, Any]) -> dict[str, Any]:
    """The child of a plain sync scenario (``kind: sync``): seed, sync, figures."""
    with scenario_db(spec) as db:
        return sync_runs(db, spec)
