"""Read-only commands load only what they need: each runs in a fresh interpreter, which then
lists what it imported.

A behaviour test, not a timing test: an operator types `status` or `report` many times a day,
and each of these libraries costs a noticeable part of a second to import. The figures
themselves are `make bench`'s "CLI start" rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from worker.testing.env import clean_env

# Run in a fresh interpreter: a command through worker.cli.main, then what it imported.
PROBE = """
import contextlib, io, json, sys
from worker.cli import main
with contextlib.redirect_stdout(io.StringIO()):  # --help and --version print there
    code = main(sys.argv[1:], stdout=io.StringIO(), stderr=io.StringIO())
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

# Migrations, the HTTP client and its retries, the scheduler, the sync and its thread pool;
# structlog, which these commands never log through (it is loaded by the first line logged).
NEVER = (
    "structlog",
    "alembic",
    "apscheduler",
    "httpx",
    "tenacity",
    "cryptography",
    "concurrent.futures.thread",
    "worker.sync.run",
    "worker.openrouter",
    "worker.daemon.service",
)
# Building the parser alone (every command's --help) needs no database layer either.
PARSER_ONLY = (*NEVER, "sqlalchemy", "worker.store.db", "worker.store.models")

READ_ONLY = {
    "--help": (["--help"], PARSER_ONLY),
    "--version": (["--version"], PARSER_ONLY),
    "report": (["report"], NEVER),
    "keys list": (["keys", "list"], NEVER),
    "users list": (["users", "list"], NEVER),
    "account-keys": (["account-keys"], NEVER),
    # The next scheduled run comes from APScheduler's cron trigger, the daemon's own, so the
    # two never disagree: its trigger module only, never the scheduler.
    "status": (
        ["status"],
        (
            *(n for n in NEVER if n != "apscheduler"),
            "apscheduler.schedulers",
            "apscheduler.executors",
            "apscheduler.jobstores",
        ),
    ),
}


def imported(argv: list[str], database_url: str) -> tuple[int, list[str]]:
    env = clean_env(
        OPENROUTER_WATCHER_CONFIG=os.devnull, OPENROUTER_WATCHER_DATABASE_URL=database_url
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(result.stdout)
    return answer["code"], answer["modules"]


def loaded(modules: list[str], package: str) -> list[str]:
    return [name for name in modules if name == package or name.startswith(package + ".")]


@pytest.mark.parametrize("command", list(READ_ONLY))
def test_read_only_commands_import_no_heavy_library(command: str, sqlite_url: str) -> None:
    argv, never = READ_ONLY[command]
    code, modules = imported(argv, sqlite_url)
    assert code == 0
    assert {package: loaded(modules, package) for package in never} == {p: [] for p in never}
