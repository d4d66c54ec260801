"""`make bench`'s scale scenario: wall time and peak RSS as the number of keys grows.

K = 100 … 5,000 management keys (30 days × 10 models × 1 endpoint each), a first sync on
SQLite at concurrency 8, each K in a fresh process against its own fake: the time per key,
and the peak RSS next to the smallest K's.
"""

from __future__ import annotations

from pathlib import Path

from harness import Findings, Row, fake_server, fmt_s, rate, run_child


def scale(sizes: tuple[int, ...], workdir: Path) -> Findings:
    """One row per K, its peak RSS next to the smallest K's."""
    rows = []
    base_rss = None
    for keys in sizes:
        with fake_server(keys, 10, 1, 0.0, workdir) as fake:
            res = run_child(
                {
                    "kind": "sync",
                    "name": f"scale-{keys}",
                    "db": "sqlite",
                    "keys": keys,
                    "concurrency": 8,
                    "workdir": str(workdir),
                    "base_url": fake.base_url,
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
                    "wall": fmt_s(run["wall"]),
                    "rows/s written": rate(written, run["wall"]),
                    "written / unchanged": f"{written:,} / {run['unchanged']:,}",
                    "HTTP req/key": f"{run['requests'] / keys:.2f}",
                    "ms/key": f"{run['wall'] / keys * 1000:.2f}",
                    "peak RSS": f"{rss:.0f} MB ({rss / base_rss - 1:+.0%} vs K={sizes[0]})",
                },
            )
        )
    return Findings(rows)
