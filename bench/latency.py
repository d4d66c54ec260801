"""`make bench`'s latency-bound scenario: the sync when every answer takes 50 ms, and what the
HTTP client alone costs.

* ``latency-bound``: K keys (30 rows each) on SQLite at several concurrencies, next to the
  ideal ``K × 0.05 s / concurrency``; the process's CPU time during the sync and its share of
  the wall time (near 100 %: bound by one interpreter's CPU, not by the network);
* ``latency-bound, HTTP only``: the same fetch threads (one client each, each taking the next
  key) against the same fake, without decryption, validation or database: a floor under the
  sync. At concurrency 32 it runs twice in the same process.

Two guard lines come from here:

* **sync CPU per OpenRouter request at c=32**: the sync's process CPU time over the requests
  the fake answered during it (asked of the fake before and after), against the round-start
  figure (target: within 1.15× of it) and today's same-machine baseline;
* **HTTP only at c=32**: CPU per request of the second run in the process (the steady one),
  the first run over the second (target: within 1.3×), and the first run's one-time cost
  (lazy imports, the TLS context: the difference of the two) shown apart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness import (
    LATENCY,
    Findings,
    Guard,
    Row,
    cpu_share,
    fake_server,
    fmt_ms,
    fmt_s,
    key_secret,
    peak_rss_mb,
    run_child,
)

GUARD_CONCURRENCY = 32
# The round's targets: sync CPU per request within 1.15× of the figure at the round's start;
# the first HTTP-only run within 1.3× of the same process's second.
ROUND_START_MS_PER_REQUEST = 3.7
SYNC_CPU_TARGET = 1.15
HTTP_FIRST_RUN_TARGET = 1.3
# Today's same-machine baselines, measured before this round's changes: `make bench` on
# 2026-12-03 at commit 802ed31 (K=500, 50 ms/answer, concurrency 32): the latency-bound sync
# used 3.74 s of CPU for 1,500 requests; the HTTP-only fetches, one run, 1.39 s for 500.
BASELINE_SYNC_CPU, BASELINE_SYNC_REQUESTS = 3.74, 1500
BASELINE_HTTP_CPU, BASELINE_HTTP_REQUESTS = 1.39, 500


def _fetch_all(
    client_class: Any, settings: Any, secrets: list[str], concurrency: int
) -> dict[str, Any]:
    """One HTTP-only run: a fresh client and thread pool, every key's ``/activity``."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    cpu_started = time.process_time()
    with (
        client_class(settings) as client,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        requests = sum(answer.requests for answer in pool.map(client.get_activity, secrets))
    return {
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu_started,
        "requests": requests,
    }


def http_only(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process (``kind: http_only``): the latency-bound fetches alone, the sync's
    thread pool and shared client, each thread taking the next key, but no decryption,
    summing or database; ``spec['repeat']`` runs, each with its own client and pool."""
    cpu_started = time.process_time()
    from worker.config import Settings
    from worker.openrouter import OpenRouterClient

    import_cpu = time.process_time() - cpu_started
    settings = Settings().replace("openrouter", base_url=spec["base_url"]).openrouter
    secrets = [key_secret(index) for index in range(spec["keys"])]
    runs = [
        _fetch_all(OpenRouterClient, settings, secrets, spec["concurrency"])
        for _ in range(spec.get("repeat", 1))
    ]
    return {"runs": runs, "import_cpu": import_cpu, "peak_rss_mb": peak_rss_mb()}


def _sync_cpu_guard(keys: int, run: dict[str, Any], fake_saw: int) -> Guard:
    per_request = run["cpu"] / fake_saw
    baseline = BASELINE_SYNC_CPU / BASELINE_SYNC_REQUESTS
    limit = ROUND_START_MS_PER_REQUEST / 1000 * SYNC_CPU_TARGET
    return Guard(
        "sync CPU per OpenRouter request, c=32",
        f"latency-bound, sqlite, K={keys}, 50 ms/answer, concurrency {GUARD_CONCURRENCY}",
        f"{fmt_ms(per_request)}/request ({fmt_s(run['cpu'])} of process CPU / "
        f"{fake_saw:,} requests the fake saw)",
        f"round start {ROUND_START_MS_PER_REQUEST} ms; today's baseline {fmt_ms(baseline)} "
        f"({BASELINE_SYNC_CPU} s / {BASELINE_SYNC_REQUESTS:,}: `make bench` on 2026-12-03 at "
        "802ed31)",
        f"{per_request * 1000 / ROUND_START_MS_PER_REQUEST:.2f}× round start; "
        f"{per_request / baseline:.2f}× baseline",
        f"≤ {SYNC_CPU_TARGET}× round start (≤ {fmt_ms(limit)})",
        per_request <= limit,
    )


def _http_only_guard(keys: int, res: dict[str, Any]) -> Guard:
    first, steady = res["runs"]
    per_request = steady["cpu"] / steady["requests"]
    ratio = first["cpu"] / steady["cpu"]
    baseline = BASELINE_HTTP_CPU / BASELINE_HTTP_REQUESTS
    return Guard(
        "HTTP only, c=32",
        f"K={keys}, 50 ms/answer, concurrency {GUARD_CONCURRENCY}, two runs in one process "
        "(a fresh client and pool each)",
        f"second run {fmt_ms(per_request)}/request ({fmt_s(steady['cpu'])} CPU / "
        f"{steady['requests']:,} requests); first run {fmt_s(first['cpu'])}, its one-time "
        f"cost {fmt_ms(first['cpu'] - steady['cpu'])} (first − second: lazy imports, the TLS "
        f"context), importing the client before it {fmt_ms(res['import_cpu'])}",
        f"the same process's second run; today's single-run baseline {BASELINE_HTTP_CPU} s / "
        f"{BASELINE_HTTP_REQUESTS} requests = {fmt_ms(baseline)}/request",
        f"first / second {ratio:.2f}×; second {per_request / baseline:.2f}× baseline",
        f"first within {HTTP_FIRST_RUN_TARGET}× of the second (the steady run is what counts)",
        ratio <= HTTP_FIRST_RUN_TARGET,
    )


def latency(
    keys: int,
    concurrencies: tuple[int, ...],
    http_only_concurrencies: tuple[int, ...],
    workdir: Path,
) -> Findings:
    """Every concurrency's sync, then the HTTP-only runs, against one fake (50 ms/answer);
    the table rows and the two guard lines (when concurrency 32 is among them)."""
    found = Findings()
    runs = [(False, concurrency) for concurrency in concurrencies] + [
        (True, concurrency) for concurrency in http_only_concurrencies
    ]
    with fake_server(keys, 1, 1, LATENCY, workdir) as fake:
        for http_alone, concurrency in runs:
            before = fake.requests()
            res = run_child(
                {
                    "kind": "http_only" if http_alone else "sync",
                    "name": f"latency-{'http-' if http_alone else ''}{concurrency}",
                    "db": "sqlite",
                    "keys": keys,
                    "concurrency": concurrency,
                    # Twice in the process at the guard's concurrency: the first run pays once.
                    "repeat": 2 if http_alone and concurrency == GUARD_CONCURRENCY else 1,
                    "workdir": str(workdir),
                    "base_url": fake.base_url,
                }
            )
            fake_saw = fake.requests() - before
            run = res["runs"][0]
            ideal = keys * LATENCY / concurrency
            figures = {
                "wall": fmt_s(run["wall"]),
                "ideal": fmt_s(ideal),
                "× ideal": f"{run['wall'] / ideal:.2f}",
                "sync CPU": cpu_share(run),
                "HTTP req/key": f"{run['requests'] / keys:.2f}",
            }
            if http_alone:
                scenario = "latency-bound, HTTP only"
                params = (
                    f"K={keys}, 50 ms/answer, concurrency {concurrency}: the fetches alone "
                    "(no decryption, validation or database)"
                )
                if len(res["runs"]) > 1:
                    params += "; the first of two runs in the process"
                    found.guards.append(_http_only_guard(keys, res))
            else:
                scenario = "latency-bound"
                params = f"sqlite, K={keys}, 50 ms/answer, concurrency {concurrency}, 30 rows/key"
                figures["peak RSS"] = f"{res['peak_rss_mb']:.0f} MB"
                if concurrency == GUARD_CONCURRENCY:
                    found.guards.insert(0, _sync_cpu_guard(keys, run, fake_saw))
            found.rows.append(Row(scenario, params, figures))
    return found
