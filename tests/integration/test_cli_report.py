"""`openrouter-watcher report` through ``worker.cli.main`` in-process (the ``cli`` fixture)
against a real SQLite file holding the known report rows of ``tests/conftest.py``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from worker.store.db import create_db_engine
from worker.testing.clock import PinnedClock

Cli = Callable[..., tuple[int, str, str]]  # the `cli` fixture of tests/conftest.py
RANGE = ["--since", "2026-11-01", "--until", "2026-11-05"]


@pytest.fixture
def database(sqlite_url: str, report_data: Any) -> dict[str, int]:
    engine = create_db_engine(sqlite_url)
    key_ids = dict(report_data(engine))
    engine.dispose()
    return key_ids


@pytest.fixture
def run(cli: Cli, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> Cli:
    """``run(*args)`` is ``openrouter-watcher report *args`` with only the database configured."""
    monkeypatch.setenv("OPENROUTER_WATCHER_DATABASE_URL", sqlite_url)

    def run(*args: str) -> tuple[int, str, str]:
        return cli("report", *args)

    return run


def _from_csv(
    text: str, by: str
) -> tuple[dict[tuple[str, ...], tuple[object, ...]], dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    total = rows.pop()
    first = {"day": "date", "model": "model", "account": "account_id", "user": "user_email"}[by]
    assert total[first] == "total"
    name = {"day": "date", "model": "model", "account": "account_name", "user": "user_email"}[by]
    parsed = {}
    for row in rows:
        metrics = (
            int(row["requests"]),
            int(row["tokens_input"]),
            int(row["tokens_output"]),
            int(row["tokens_reasoning"]),
            Decimal(row["cost"]),
            Decimal(row["byok_cost"]),
        )
        if by == "day" and metrics[0] == 0 and metrics[4] == 0:
            continue  # a day without usage, listed so gaps show
        parsed[(row[name],)] = metrics
    return parsed, total


@pytest.mark.parametrize("by", ["day", "model", "account", "user"])
def test_csv_for_every_dimension_matches_the_reference(
    run: Cli, database: dict[str, int], report_data: Any, by: str
) -> None:
    code, out, err = run(*RANGE, "--by", by, "--format", "csv")
    assert code == 0, err
    assert out.startswith(
        {
            "day": "date,",
            "model": "model,",
            "account": "account_id,account_name,user_email,",
            "user": "user_email,",
        }[by]
        + "requests,tokens_input,tokens_output,tokens_reasoning,"
        "cost,byok_cost\r\n"
    )
    parsed, total = _from_csv(out, by)
    expected = report_data.expected(by)
    assert parsed == expected
    assert Decimal(total["cost"]) == sum((v[4] for v in expected.values()), Decimal(0))
    assert total["cost"] == "1235.906230065"  # all nine decimals, exact
    assert total["byok_cost"] == "0.400000500"


@pytest.mark.parametrize(
    ("options", "kwargs", "by"),
    [
        (["--user", "bob@example.com"], {"user": "bob@example.com"}, "model"),
        (["--key", "{staging}"], {"key": "staging"}, "day"),
        (["--model", "openai/gpt-4o"], {"model": "openai/gpt-4o"}, "user"),
        (
            ["--user", "alice@example.com", "--model", "openai/gpt-4o"],
            {"user": "alice@example.com", "model": "openai/gpt-4o"},
            "account",
        ),
    ],
)
def test_json_with_filters_matches_the_reference(
    run: Cli,
    database: dict[str, int],
    report_data: Any,
    options: list[str],
    kwargs: dict[str, str],
    by: str,
) -> None:
    options = [o.format(**database) for o in options]
    code, out, err = run(*RANGE, "--by", by, "--format", "json", *options)
    assert code == 0, err
    document = json.loads(out)
    assert set(document) == {"range", "by", "filters", "rows", "total"}
    assert document["range"] == {"since": "2026-11-01", "until": "2026-11-05", "days": 5}
    assert document["by"] == by
    assert document["filters"] == {
        "user": kwargs.get("user"),
        "model": kwargs.get("model"),
        "key": database[kwargs["key"]] if "key" in kwargs else None,
    }
    name = {"day": "date", "model": "model", "account": "account_name", "user": "user_email"}[by]
    parsed = {
        (row[name],): (
            row["requests"],
            row["tokens_input"],
            row["tokens_output"],
            row["tokens_reasoning"],
            Decimal(row["cost"]),
            Decimal(row["byok_cost"]),
        )
        for row in document["rows"]
        if row["requests"] or Decimal(row["cost"])
    }
    expected = report_data.expected(by, **kwargs)
    assert parsed == expected
    assert Decimal(document["total"]["cost"]) == sum((v[4] for v in expected.values()), Decimal(0))
    assert all(isinstance(row["cost"], str) for row in document["rows"])


def test_day_table_states_the_range_and_draws_bars(run: Cli, database: dict[str, int]) -> None:
    code, out, err = run(*RANGE, "--by", "day")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "spend by day, 2026-11-01 to 2026-11-05 (UTC, 5 days)"
    spike = next(line for line in lines if line.startswith("2026-11-02"))
    assert spike.endswith("█" * 20) and "$1,234.57" in spike and "7,300" in spike
    quiet = next(line for line in lines if line.startswith("2026-11-04"))
    assert quiet.endswith("$0.00")  # no usage: a zero row, no bar
    assert lines[-1].split() == [
        "total",
        "81",
        "1,358,878",
        "114,868",
        "5,101",
        "$1,235.91",
        "$0.40",
    ]


def test_default_range_is_the_last_30_days_and_empty_is_not_an_error(
    run: Cli, pinned_clock: PinnedClock
) -> None:
    code, out, err = run()
    assert (code, err) == (0, "")
    assert pinned_clock.day == dt.date(2026, 11, 20)
    assert out == "no usage between 2026-10-21 and 2026-11-19\n"


def test_empty_json_stays_parseable_and_says_why_on_stderr(
    run: Cli, database: dict[str, int]
) -> None:
    code, out, err = run("--since", "2020-01-01", "--until", "2020-01-02", "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["rows"] == [] and document["total"]["cost"] == "0.000000000"
    assert err.strip() == "no usage between 2020-01-01 and 2020-01-02"


def test_output_writes_the_file_and_nothing_to_stdout(
    run: Cli, database: dict[str, int], tmp_path: Path
) -> None:
    target = tmp_path / "out" / "spend.csv"
    target.parent.mkdir()
    target.write_text("previous report")
    code, out, err = run(*RANGE, "--by", "model", "--format", "csv", "--output", str(target))
    assert code == 0, err
    assert out == ""
    rows = list(csv.DictReader(io.StringIO(target.read_bytes().decode(), newline="")))
    assert rows[0]["model"] == "openai/gpt-4o" and rows[-1]["cost"] == "1235.906230065"
    assert [p.name for p in target.parent.iterdir()] == ["spend.csv"]  # no temp file left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-11-05", "--until", "2026-11-01"], "inverted range"),
        (["--since", "2026-02-30"], "bad date '2026-02-30'"),
        (["--until", "yesterday"], "bad date 'yesterday'"),
        (["--since", "2026-11-01", "--last", "3"], "not allowed with argument --since"),
        (["--last", "0"], "not a positive number of days"),
        (["--user", "nobody@example.com"], "no user with email nobody@example.com"),
        (["--key", "999"], "no API key with id 999"),
        (["--by", "week"], "invalid choice: 'week'"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(
    run: Cli, database: dict[str, int], args: list[str], message: str
) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_key_table_json_by_key_and_a_relative_output(
    run: Cli, database: dict[str, int], tmp_path: Path
) -> None:
    code, out, _ = run(*RANGE, "--by", "key")
    assert code == 0 and out.splitlines()[0].startswith("spend by key, 2026-11-01 to 2026-11-05")
    code, out, _ = run(*RANGE, "--format", "json", "--key", str(database["research"]))
    assert code == 0 and json.loads(out)["total"]["cost"] == "1.038338331"
    code, out, err = run(*RANGE, "--by", "day", "--output", "report.txt")
    assert (code, out, err.strip()) == (0, "", "report written to report.txt")
    assert (tmp_path / "report.txt").read_text().startswith("spend by day")
    code, out, err = run("--since", "2020-01-01", "--until", "2020-01-01", "--format", "csv")
    assert code == 0 and out.startswith("model,requests")
    assert err.strip() == "no usage between 2020-01-01 and 2020-01-01"
    code, _, err = run("--key", "999")
    assert code == 2 and err.strip() == (
        "error: no API key with id 999: see `openrouter-watcher keys list`"
    )


@pytest.mark.parametrize(
    "args", [["--since", "2026-02-30"], ["--until", "26-11-01"], ["--last", "x"], ["--last", "-1"]]
)
def test_bad_dates_and_counts_are_argument_errors(run: Cli, args: list[str]) -> None:
    code, out, err = run(*args)
    assert (code, out) == (2, "") and err.startswith(f"error: argument {args[0]}: ")
