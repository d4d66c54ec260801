"""`make bench`'s guards scenario (issue 21): the declared limits of a big account.

One registered management key whose account lists K keys, M of them matched by one
``[[limits]]`` glob (``ci-*``), half of those already as declared: ``limits plan`` (the
library call the command makes: the listing, then the plan) and ``limits apply`` (one PATCH per
changed key). The goal: a plan costs the listing pages only, under 2 s here; an apply costs the
changed keys plus the listing.

The fake runs in its own process (``bench/accounts.py``'s :func:`~accounts.serve`, which names
and limits the keys this scenario asks for) and the plan in a fresh interpreter.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from harness import Findings, Row, fake_process, fmt_s, run_child, scenario_db


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process (``kind: guards``): plan, then apply, the declared limit."""
    from decimal import Decimal

    from worker.config import OpenRouterSettings
    from worker.config.limits import LimitTable
    from worker.guards.accounts import list_accounts, management_hashes, management_sources
    from worker.guards.limits import apply, plan
    from worker.openrouter import OpenRouterClient

    table = LimitTable("[[limits]] #1 (keys 'ci-*')", ("ci-*",), (), Decimal(25), "daily", None)
    with scenario_db({**spec, "keys": 1}) as db:
        sources = management_sources(db.factory)
        runs: list[dict[str, Any]] = []
        for _ in range(2):  # the plan twice: a first run imports and builds the TLS context
            with OpenRouterClient(OpenRouterSettings(base_url=spec["base_url"])) as client:
                started = time.perf_counter()
                accounts, _failed = list_accounts(client, db.keyring, sources)
                plans = plan([table], accounts, management_hashes(db.keyring, sources, accounts))
                runs.append(
                    {
                        "wall": time.perf_counter() - started,
                        "requests": client.requests_made,
                        "matched": len(plans),
                        "changing": sum(1 for p in plans if p.changes),
                    }
                )
        with OpenRouterClient(OpenRouterSettings(base_url=spec["base_url"])) as client:
            started = time.perf_counter()
            accounts, _failed = list_accounts(client, db.keyring, sources)
            plans = plan([table], accounts, management_hashes(db.keyring, sources, accounts))
            done = apply(db.factory, client, accounts, [p for p in plans if p.changes])
            applied = {
                "wall": time.perf_counter() - started,
                "requests": client.requests_made,
                "changed": sum(1 for d in done if d.ok),
            }
    return {"plan": runs[-1], "first_plan": runs[0], "apply": applied}


def rows(params: dict[str, Any], workdir: Path) -> Findings:
    """The plan's and the apply's table rows."""
    found = Findings()
    keys, matched = params["guards"]
    shape = {"keys": keys, "days": 0, "models": 1, "named": matched, "limited": matched // 2}
    with fake_process({"account": shape}, workdir) as fake:
        res = run_child(
            {
                "kind": "guards",
                "name": "guards",
                "history_days": 0,
                "workdir": str(workdir),
                "base_url": fake.base_url,
            }
        )
    listing = 1 + math.ceil(keys / 100) + 1  # /workspaces, the full /keys pages, the last one
    run, first, applied = res["plan"], res["first_plan"], res["apply"]
    about = (
        f"sqlite, 1 management key, account of {keys:,} keys, {matched} matched by [[limits]] "
        f'keys = ["ci-*"], {matched - matched // 2} to change'
    )
    found.rows.append(
        Row(
            "limits plan",
            about,
            {
                "wall": f"{fmt_s(run['wall'])} (first in the process {fmt_s(first['wall'])}; "
                "goal ≤ 2 s)",
                "requests": f"{run['requests']:,} (the listing: {listing}; {run['matched']:,} "
                f"matched, {run['changing']:,} would change)",
            },
        )
    )
    found.rows.append(
        Row(
            "limits apply",
            about,
            {
                "wall": fmt_s(applied["wall"]),
                "requests": f"{applied['requests']:,} (= {applied['changed']:,} changed + the "
                f"listing {listing}: {applied['changed'] + listing:,})",
            },
        )
    )
    return found
