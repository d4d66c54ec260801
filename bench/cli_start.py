"""`make bench`'s "CLI start" rows (issue 16) and the **CLI CPU** guard line: how long the
read-only commands an operator types all day take, start to finish, and how much CPU they use,
next to the interpreter alone.

The database is the one `make demo` builds (three keys, 30 days, a sync and its ledger),
built afresh by running the demo in a scratch directory. Each command is the installed console
script in a fresh process (as an operator runs it), run once to warm the disk cache and then
five times (three at ``BENCH_SCALE=small``). The rows show the median wall time, next to
``python -c pass``.

The guard line: ``status``, ``report``, ``keys list`` and ``account-keys``, the median CPU time
of the same runs (user + system of the child, from ``os.wait4``), each against the CPU time of
``python -c "import sqlalchemy.orm"`` (the same interpreter: what any command reading the
database must import), the floor; target: each at most twice the floor.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import Findings, Guard, Row

RUNS = 5  # the full scale's; BENCH_SCALE=small passes its own
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("--version",),
    ("status",),
    ("report",),
    ("keys", "list"),
    ("users", "list"),
    ("account-keys",),
)
GUARDED: tuple[tuple[str, ...], ...] = (
    ("status",),
    ("report",),
    ("keys", "list"),
    ("account-keys",),
)
FLOOR = "import sqlalchemy.orm"
CPU_TARGET = 2.0  # each guarded command's CPU at most this many times the floor's


@dataclass(frozen=True)
class Timing:
    """Medians of the runs of one command (after a warm-up run)."""

    wall: float
    cpu: float  # user + system time of the child
    failed: int  # runs that exited non-zero


def _measure(argv: list[str], env: dict[str, str], runs: int) -> Timing:
    walls, cpus, failed = [], [], 0
    for run in range(runs + 1):
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if run:  # the first run only warms the disk cache
            walls.append(wall)
            cpus.append(usage.ru_utime + usage.ru_stime)
            failed += proc.returncode != 0
    return Timing(statistics.median(walls), statistics.median(cpus), failed)


def _cpu_guard(floor: Timing, timings: dict[tuple[str, ...], Timing], runs: int) -> Guard:
    ratios = {command: timings[command].cpu / floor.cpu for command in GUARDED}
    failed = [command for command in GUARDED if timings[command].failed]
    figure = "; ".join(f"`{' '.join(c)}` {timings[c].cpu:.3f} s" for c in GUARDED)
    if failed:
        figure += " (failed: " + ", ".join(" ".join(c) for c in failed) + ")"
    return Guard(
        "CLI CPU",
        f"each a fresh console-script process on the `make demo` database (SQLite), CPU time "
        f"(user + sys of the child), median of {runs}",
        figure,
        f'floor `python -c "{FLOOR}"` {floor.cpu:.3f} s',
        "; ".join(f"`{' '.join(c)}` {ratio:.2f}×" for c, ratio in ratios.items()),
        f"each ≤ {CPU_TARGET:g}× the floor",
        not failed and all(ratio <= CPU_TARGET for ratio in ratios.values()),
    )


def rows(workdir: Path, runs: int = RUNS) -> Findings:
    """The CLI start rows and the CLI CPU guard line, medians of ``runs`` runs."""
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
    interpreter = _measure([sys.executable, "-c", "pass"], env, runs)
    floor = _measure([sys.executable, "-c", FLOOR], env, runs)
    found = Findings()
    found.rows.append(
        Row(
            "CLI start",
            f"`python -c pass`, median of {runs}",
            {"wall": f"{interpreter.wall:.2f} s"},
        )
    )
    found.rows.append(
        Row(
            "CLI start",
            f'`python -c "{FLOOR}"` (the CLI CPU floor), median of {runs}',
            {
                "wall": f"{floor.wall:.2f} s",
                "vs python -c pass": f"+{floor.wall - interpreter.wall:.2f} s",
            },
        )
    )
    script = str(Path(sys.executable).parent / "openrouter-watcher")
    timings = {}
    for command in COMMANDS:
        timing = timings[command] = _measure([script, *command], env, runs)
        failed = f" ({timing.failed} of {runs} runs failed)" if timing.failed else ""
        found.rows.append(
            Row(
                "CLI start",
                f"`openrouter-watcher {' '.join(command)}`, `make demo` database (SQLite), "
                f"median of {runs}{failed}",
                {
                    "wall": f"{timing.wall:.2f} s",
                    "vs python -c pass": f"+{timing.wall - interpreter.wall:.2f} s",
                },
            )
        )
    found.guards.append(_cpu_guard(floor, timings, runs))
    return found
