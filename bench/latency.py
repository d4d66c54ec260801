"""`make bench`'s latency-bound scenario: the sync when every answer takes 50 ms, and what the
HTTP client alone costs.

* ``latency-bound``: K keys (30 rows each) on SQLite at several concurrencies, next to the
  ideal ``K × 0.05 s / concurrency``; the process's CPU time during the sync and its share of
  the wall time (near 100 %: bound by one interpreter's CPU, not by the network);
* ``latency-bound, HTTP only``: the same fetch threads (one client each, each taking the next
  key) against the same fake, without decryption, validation or database: a floor under the
  sync.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness import (
    LATENCY,
    Findings,
    Row,
    cpu_share,
    fake_server,
    fmt_s,
    key_secret,
    peak_rss_mb,
    run_child,
)


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
    summing or database."""
    from worker.config import Settings
    from worker.openrouter import OpenRouterClient

    settings = Settings().replace("openrouter", base_url=spec["base_url"]).openrouter
    secrets = [key_secret(index) for index in range(spec["keys"])]
    run = _fetch_all(OpenRouterClient, settings, secrets, spec["concurrency"])
    return {"runs": [run], "peak_rss_mb": peak_rss_mb()}


def latency(
    keys: int,
    concurrencies: tuple[int, ...],
    http_only_concurrencies: tuple[int, ...],
    workdir: Path,
) -> Findings:
    """Every concurrency's sync, then the HTTP-only runs, against one fake (50 ms/answer)."""
    found = Findings()
    runs = [(False, concurrency) for concurrency in concurrencies] + [
        (True, concurrency) for concurrency in http_only_concurrencies
    ]
    with fake_server(keys, 1, 1, LATENCY, workdir) as fake:
        for http_alone, concurrency in runs:
            res = run_child(
                {
                    "kind": "http_only" if http_alone else "sync",
                    "name": f"latency-{'http-' if http_alone else ''}{concurrency}",
                    "db": "sqlite",
                    "keys": keys,
                    "concurrency": concurrency,
                    "workdir": str(workdir),
                    "base_url": fake.base_url,
                }
            )
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
            else:
                scenario = "latency-bound"
                params = f"sqlite, K={keys}, 50 ms/answer, concurrency {concurrency}, 30 rows/key"
                figures["peak RSS"] = f"{res['peak_rss_mb']:.0f} MB"
            found.rows.append(Row(scenario, params, figures))
    return found
