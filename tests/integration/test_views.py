"""The reporting views of migration 0003 on SQLite and PostgreSQL: columns, rows, exact sums."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from worker.store.db import downgrade_db, init_db
from worker.store.models import Base, to_money

LEVEL_COLUMNS = [
    "level",
    "user_email",
    "key_id",
    "key_name",
    "account_id",
    "account_name",
    "key_hash",
]
USAGE_COLUMNS = [
    *LEVEL_COLUMNS,
    "date",
    "model",
    "requests",
    "tokens_input",
    "tokens_output",
    "tokens_reasoning",
    "cost",
    "byok_cost",
]
SPEND_COLUMNS = [
    *LEVEL_COLUMNS,
    "date",
    "models",
    "requests",
    "tokens_input",
    "tokens_output",
    "tokens_reasoning",
    "cost",
    "byok_cost",
]


def _views(engine: Engine) -> set[str]:
    return set(inspect(engine).get_view_names())


def _rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(text(sql)).mappings()]


def test_views_have_the_documented_columns(report_db: tuple[Engine, dict[str, int]]) -> None:
    engine = report_db[0]
    assert {"v_usage_daily", "v_spend_daily"} <= _views(engine)
    inspector = inspect(engine)
    assert [c["name"] for c in inspector.get_columns("v_usage_daily")] == USAGE_COLUMNS
    assert [c["name"] for c in inspector.get_columns("v_spend_daily")] == SPEND_COLUMNS


def test_v_usage_daily_has_one_row_per_usage_row_with_names(
    report_db: tuple[Engine, dict[str, int]], report_data: Any
) -> None:
    engine, key_ids = report_db
    rows = _rows(engine, "SELECT * FROM v_usage_daily ORDER BY date, key_id, model")
    expected = sorted(
        (
            (day, key_ids[report_data.keys[k][0]], model),
            (
                report_data.users[report_data.keys[k][1]],
                report_data.keys[k][0],
                requests,
                t_in,
                t_out,
                t_reason,
                Decimal(cost),
                Decimal(byok),
            ),
        )
        for k, day, model, requests, t_in, t_out, t_reason, cost, byok in report_data.usage
    )
    got = [
        (
            (str(r["date"]), r["key_id"], r["model"]),
            (
                r["user_email"],
                r["key_name"],
                r["requests"],
                r["tokens_input"],
                r["tokens_output"],
                r["tokens_reasoning"],
                to_money(r["cost"]),
                to_money(r["byok_cost"]),
            ),
        )
        for r in rows
    ]
    assert got == expected


def test_v_spend_daily_sums_each_key_day_exactly(
    report_db: tuple[Engine, dict[str, int]], report_data: Any
) -> None:
    engine, key_ids = report_db
    expected: dict[tuple[str, int], list[Any]] = {}
    for k, day, _model, requests, t_in, t_out, t_reason, cost, byok in report_data.usage:
        group = (day, key_ids[report_data.keys[k][0]])
        sums = expected.setdefault(
            group,
            [
                report_data.users[report_data.keys[k][1]],
                report_data.keys[k][0],
                0,
                0,
                0,
                0,
                0,
                Decimal(0),
                Decimal(0),
            ],
        )
        for i, value in enumerate((1, requests, t_in, t_out, t_reason)):
            sums[2 + i] += value
        sums[7] += Decimal(cost)
        sums[8] += Decimal(byok)
    rows = _rows(engine, "SELECT * FROM v_spend_daily")
    got = {
        (str(r["date"]), r["key_id"]): [
            r["user_email"],
            r["key_name"],
            r["models"],
            r["requests"],
            r["tokens_input"],
            r["tokens_output"],
            r["tokens_reasoning"],
            to_money(r["cost"]),
            to_money(r["byok_cost"]),
        ]
        for r in rows
    }
    assert got == expected
    # Alice's production key on 2026-11-01: 0.1 + 0.2 is 0.3 here, not 0.30000000000000004.
    assert got[("2026-11-01", key_ids["production"])][7] == Decimal("0.3")


def test_the_documented_example_queries_run(report_db: tuple[Engine, dict[str, int]]) -> None:
    """Every ```sql block of docs/reports.md runs on both databases and answers sensibly."""
    engine = report_db[0]
    text_of_docs = (Path(__file__).parents[2] / "docs" / "reports.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text_of_docs, flags=re.DOTALL)
    queries = [q.strip() for block in blocks for q in block.split(";") if q.strip()]
    assert len(queries) == 2
    by_user_model = _rows(engine, queries[0].replace("2026-11-01", "2026-10-01"))
    assert {row["user_email"] for row in by_user_model} == {
        "alice@example.com",
        "bob@example.com",
    }
    total = sum((to_money(row["cost"]) for row in by_user_model), Decimal(0))
    assert abs(total - Decimal("1250.906230064")) < Decimal("0.02")  # rounded to cents each
    assert _rows(engine, queries[1]) == []  # no account lists its keys in these rows


def test_downgrade_drops_the_views_and_upgrade_restores_them(engine: Engine) -> None:
    downgrade_db(engine, "0002")
    assert not {"v_usage_daily", "v_spend_daily"} & _views(engine)
    init_db(engine)
    assert {"v_usage_daily", "v_spend_daily"} <= _views(engine)


def test_views_do_not_show_up_as_drift_against_the_models(
    report_db: tuple[Engine, dict[str, int]],
) -> None:
    engine = report_db[0]
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert list(compare_metadata(context, Base.metadata)) == []
