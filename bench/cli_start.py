"""`make bench`'s "CLI start" rows (issue 16): how long the read-only commands an operator
types all day take, start to finish, next to the interpreter alone.

The database is the one `make demo` builds (three keys, 30 days, a sync and its ledger),
built afresh by running the demo in a scratch directory. Each command is the installed console
script in a fresh process (as an operator runs it), run once to warm the disk cache and then
five times; the row shows the median wall time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import Findings, Row

RUNS = 5
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("--version",),
    ("status",),
    ("report",),
    ("keys", "list"),
    ("users", "list"),
)


def _median_wall(argv: list[str], env: dict[str, str]) -> float:
    times = []
    for run in range(RUNS + 1):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if run:  # the first run only warms the disk cache
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def rows(workdir: Path) -> Findings:
    """The CLI start rows."""
    from worker.testing.env import clean_env

    demo = workdir / "cli-start"
    demo.mkdir()
    # worker.demo builds data/demo/demo.db under its working directory.
    subprocess.run(
        [sys.executable, "-m", "worker.demo"],
        cwd=demo,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    env = clean_env(
        OPENROUTER_WATCHER_CONFIG=os.devnull,
        OPENROUTER_WATCHER_DATABASE_URL=f"sqlite:///{demo / 'data' / 'demo' / 'demo.db'}",
    )
    interpreter = _median_wall([sys.executable, "-c", "pass"], env)
    found = [
        Row(
            "CLI start",
            f"`python -c pass`, median of {RUNS}",
            {"wall": f"{interpreter:.2f} s"},
        )
    ]
    script = str(Path(sys.executable).parent / "openrouter-watcher")
    for command in COMMANDS:
        wall = _median_wall([script, *command], env)
        found.append(
            Row(
                "CLI start",
                f"`openrouter-watcher {' '.join(command)}`, `make demo` database (SQLite), "
                f"median of {RUNS}",
                {"wall": f"{wall:.2f} s", "vs python -c pass": f"+{wall - interpreter:.2f} s"},
            )
        )
    return Findings(found)
