"""Bad input and hostile conditions get one line on stderr and the documented exit code, never a
traceback, and change nothing."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.cli import main


@pytest.fixture
def env(
    tmp_path: Path, sqlite_url: str, master_key: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A migrated SQLite database, a master key and no configuration file."""
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENROUTER_WATCHER_ENCRYPTION_KEY", master_key)
    monkeypatch.setenv("OPENROUTER_WATCHER_CONFIG", "/dev/null")
    yield sqlite_url


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--log-level", "ERROR", *argv], stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def one_line(err: str, starts: str) -> None:
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {starts}"), err
    assert "Traceback" not in err


def test_sqlite_locked_by_another_process_at_run_start(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_BUSY_TIMEOUT_MS", "100")
    holder = sqlite3.connect(env.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        code, out, err = run("sync")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (code, out) == (1, "")
    one_line(err, "the database sqlite:///")
    assert "is locked by another process" in err
    assert run("sync")[0] == 0  # nothing was left behind: the next sync runs (no keys)


def test_a_configuration_file_that_is_not_utf8(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b"[database]\nurl = '\xff\xfe'\n")
    monkeypatch.delenv("OPENROUTER_WATCHER_CONFIG")
    code, _out, err = run("--config", str(config), "status")
    assert code == 2
    one_line(err, f"configuration file {config} is not UTF-8 text")


@pytest.mark.parametrize(
    ("setting", "value"), [("OPENROUTER_READ_TIMEOUT", "nan"), ("SYNC_MAX_DELETE_FRACTION", "inf")]
)
def test_settings_that_are_not_finite_numbers(
    env: str, monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(f"OPENROUTER_WATCHER_{setting}", value)
    code, _out, err = run("status")
    assert code == 2
    one_line(err, "invalid configuration: environment variable ")
    assert "must be a finite number" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--until", "0001-01-01"], "--until 0001-01-01 leaves no room for 30 days"),
        (["--last", "3650000"], "--last must be between 1 and 3660 days"),
        (["--since", "0001-01-01", "--until", "9999-12-31"], "the range 0001-01-01"),
    ],
)
def test_report_ranges_it_cannot_answer(env: str, args: list[str], message: str) -> None:
    code, out, err = run("report", *args)
    assert (code, out) == (2, "")
    one_line(err, message)


def test_report_output_naming_a_directory(env: str, tmp_path: Path) -> None:
    code, _out, err = run("report", "--output", str(tmp_path))
    assert code == 2
    one_line(err, f"cannot write {tmp_path}: it is a directory")


def test_an_unusable_sqlite_path(env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", f"sqlite:///{blocker}/watcher.db")
    code, _out, err = run("migrate")
    assert code == 2
    one_line(err, f"cannot create the directory {blocker} for the SQLite database")


def test_control_characters_from_names_are_escaped_in_tables(env: str) -> None:
    assert run("users", "add", "ops@example.com")[0] == 0
    hostile = "prod\x1b[2J\x07"
    code, _out, err = run(
        "keys", "add", "--user", "ops@example.com", "--name", hostile, "--no-verify",
        stdin="sk-or-v1-" + "1" * 64,
    )  # fmt: skip
    assert (code, err) == (0, "")
    code, out, _err = run("keys", "list")
    assert code == 0
    assert "prod\\x1b[2J\\x07" in out
    assert "\x1b" not in out and "\x07" not in out


def test_sql_echo_goes_through_the_log_pipeline(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_ECHO", "true")
    monkeypatch.setenv("OPENROUTER_WATCHER_LOGGING_FORMAT", "json")
    out, err = io.StringIO(), io.StringIO()
    code = main(["--log-level", "INFO", "users", "list"], stdout=out, stderr=err)
    assert code == 0
    assert "SELECT" not in out.getvalue()  # nothing printed past the pipeline
    sql_lines = [line for line in err.getvalue().splitlines() if "SELECT" in line]
    assert sql_lines and all(line.startswith("{") for line in sql_lines)  # our JSON lines
