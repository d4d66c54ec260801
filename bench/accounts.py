"""`make bench`'s account scenarios (issue 12): every key of an account, a year of history.

* ``account``: one registered management key whose account lists K keys (30 days × M models
  each): the first sync (listing, every key's ``/activity?api_key_hash=``) and an unchanged
  re-sync (which must cost the listing and nothing per key): requests made and wall time;
* ``history import``: an account of K keys × M models with a year of activity: the first sync
  imports the 335 days before ``/activity``'s window from ``/analytics/query`` for the account
  and every key, at OpenRouter's 64 requests a minute (the limiter's waiting is reported on
  its own: it is OpenRouter's limit, not our cost).

The **requests** guard line comes from the account scenario: each sync's request count next to
the one the formula gives (:func:`expected_requests`).

Like the other scenarios, the fake runs in its own process and the sync in a fresh
interpreter (see ``bench/harness.py``); ``bench/run.py`` hands those processes to
:func:`serve` and :func:`child` here.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness import (
    Findings,
    Guard,
    Row,
    fake_process,
    fmt_s,
    key_secret,
    peak_rss_mb,
    rate,
    run_child,
    scenario_db,
    serve_until_stopped,
)


def serve(spec: dict[str, Any]) -> int:
    """A fake OpenRouter serving one generated account behind management key 0, until
    SIGTERM; at the end, its requests by path and the account's ``/keys`` page size."""
    from worker.testing.fake_account import generate_account
    from worker.testing.fake_openrouter import FakeOpenRouter

    today = dt.date.fromisoformat(spec["today"])
    shape = spec["account"]
    account = generate_account(
        today=today,
        keys=shape["keys"],
        days=shape["days"],
        models=shape["models"],
        seed=1,
        secrets=False,
    )
    # The guards scenario: the first `named` keys are ci-0000 …, the first `limited` of them
    # already at the declared $25 a day.
    for index, key in enumerate(account.keys[: shape.get("named", 0)]):
        key.name = f"ci-{index:04d}"
        if index < shape.get("limited", 0):
            key.limit, key.limit_reset = Decimal(25), "daily"
    fake = FakeOpenRouter(today=today)
    fake.add_account(key_secret(0), account)

    def final() -> dict[str, Any]:
        paths: dict[str, int] = {}
        refused: dict[str, int] = {}  # answers other than 200, by path and status
        for request in fake.requests:
            paths[request.path] = paths.get(request.path, 0) + 1
            if request.status != 200:
                where = f"{request.path} {request.status}"
                refused[where] = refused.get(where, 0) + 1
        return {
            "requests": fake.request_count(),
            "paths": paths,
            "refused": refused,
            "page_size": account.page_size,
        }

    return serve_until_stopped(fake, final)


def sync_figures(db: Any, base_url: str, history_days: int) -> dict[str, Any]:
    """One run_sync of the account, timed; its figures."""
    from worker.config import Settings
    from worker.sync.run import run_sync

    settings = (
        Settings()
        .replace("openrouter", base_url=base_url)
        .replace("sync", concurrency=8, history_days=history_days)
    )
    started = time.perf_counter()
    summary = run_sync(db.factory, settings, db.keyring, trigger="sync")
    wall = time.perf_counter() - started
    catalogue, history = summary.catalogue, summary.history
    return {
        "wall": wall,
        "status": summary.status,
        "requests": summary.requests,
        "listed": catalogue.listed,
        "fetched": catalogue.fetched,
        "unchanged_keys": catalogue.unchanged,
        "key_rows": catalogue.counts.inserted + catalogue.counts.updated,
        "rows_written": sum(
            c.inserted + c.updated + c.deleted
            for c in (summary.counts, catalogue.counts, history.counts)
        ),
        "history_requests": history.requests,
        "history_rows": history.counts.inserted + history.counts.updated,
        "rate_limit_seconds": history.rate_limit_seconds,
        "pending": history.pending,
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process (``kind: account``): seed the database with the management key,
    then sync (twice for the account scenario)."""
    with scenario_db({**spec, "keys": 1}) as db:
        runs = [sync_figures(db, spec["base_url"], spec["history_days"])]
        if spec.get("resync"):
            runs.append(sync_figures(db, spec["base_url"], spec["history_days"]))
    return {"runs": runs, "peak_rss_mb": peak_rss_mb()}


def expected_requests(
    registered: int, accounts: int, catalogued: int, page_size: int, *, first: bool
) -> tuple[int, str]:
    """What a sync should cost, and how the sum is made: 1 ``/activity`` per registered key;
    per account, ``/workspaces`` (one page, or its refusal) and the ``/keys`` pages (full ones,
    then the short or empty one that ends the listing); on a first sync, 1 ``/activity`` per
    catalogued key of the account."""
    pages = accounts * (math.ceil(catalogued / page_size) + 1)
    parts = [
        (registered, "/activity"),
        (accounts, "/workspaces"),
        (pages, "/keys pages"),
    ]
    if first:
        parts.append((catalogued, "keys' /activity"))
    total = sum(count for count, _ in parts)
    return total, " + ".join(f"{count:,} {what}" for count, what in parts)


def _requests_guard(
    keys: int, first: dict[str, Any], again: dict[str, Any], stats: dict[str, Any]
) -> Guard:
    page_size = int(stats.get("page_size", 100))
    want_first, how_first = expected_requests(1, 1, keys, page_size, first=True)
    want_again, how_again = expected_requests(1, 1, keys, page_size, first=False)
    return Guard(
        "requests",
        f"account scenario: 1 registered management key, its account of {keys:,} keys in the "
        f"default workspace (/workspaces refused), /keys pages of {page_size}",
        f"first sync {first['requests']:,}; unchanged re-sync {again['requests']:,} (the fake "
        f"saw {stats.get('requests', 0):,} in all)",
        f"expected {want_first:,} = {how_first}; expected {want_again:,} = {how_again}",
        f"{first['requests'] / want_first:.3f}; {again['requests'] / want_again:.3f}",
        "= expected",
        first["requests"] == want_first and again["requests"] == want_again,
    )


def rows(params: dict[str, Any], workdir: Path) -> Findings:
    """The two scenarios' table rows and the requests guard line."""
    found = Findings()
    keys, models = params["account"]
    with fake_process({"account": {"keys": keys, "days": 30, "models": models}}, workdir) as fake:
        res = run_child(
            {
                "kind": "account",
                "name": "account",
                "history_days": 0,
                "resync": True,
                "workdir": str(workdir),
                "base_url": fake.base_url,
            }
        )
    first, again = res["runs"]
    found.guards.append(_requests_guard(keys, first, again, fake.stats))
    for label, run in (("first sync", first), ("unchanged re-sync", again)):
        found.rows.append(
            Row(
                f"account {label}",
                f"sqlite, 1 management key, account of {keys:,} keys × 30 days × {models} "
                "models, c=8",
                {
                    "wall": fmt_s(run["wall"]),
                    "requests": f"{run['requests']:,} ({run['fetched']:,} keys fetched, "
                    f"{run['unchanged_keys']:,} unchanged)",
                    "rows/s written": rate(run["key_rows"], run["wall"])
                    if run["key_rows"]
                    else "0 (none written)",
                    "peak RSS": f"{res['peak_rss_mb']:.0f} MB",
                },
            )
        )
    keys, models = params["history"]
    shape = {"keys": keys, "days": 365, "models": models}
    with fake_process({"account": shape}, workdir) as fake:
        res = run_child(
            {
                "kind": "account",
                "name": "history",
                "history_days": 365,
                "workdir": str(workdir),
                "base_url": fake.base_url,
            }
        )
    (run,) = res["runs"]
    waited = run["rate_limit_seconds"]
    found.rows.append(
        Row(
            "history import",
            f"sqlite, 365 days, account + {keys} keys × {models} models, first sync, "
            "OpenRouter's 64 analytics requests/min",
            {
                "wall": f"{fmt_s(run['wall'])} ({fmt_s(waited)} of it waiting on the rate "
                f"limit; {fmt_s(run['wall'] - waited)} without)",
                "requests": f"{run['requests']:,} ({run['history_requests']:,} analytics; "
                f"{fake.stats.get('refused', {}).get('/api/v1/analytics/query 429', 0)} of "
                "them answered 429)",
                "rows/s written": f"{rate(run['rows_written'], run['wall'] - waited)} "
                f"({run['rows_written']:,} rows, {run['history_rows']:,} of them history; "
                "rate-limit wait excluded)",
                "peak RSS": f"{res['peak_rss_mb']:.0f} MB",
            },
        )
    )
    return found
