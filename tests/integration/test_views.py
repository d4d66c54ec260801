"""The reporting views of migration 0003 on SQLite and PostgreSQL: columns, rows, exact sums."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from worker.db import downgrade_db, init_db
from worker.models import Base, to_money

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


def test_the_readme_example_queries_run(report_db: tuple[Engine, dict[str, int]]) -> None:
    engine = report_db[0]
    by_model = _rows(
        engine,
        """
        SELECT model, SUM(cost) AS cost
        FROM v_usage_daily
        WHERE date BETWEEN '2026-11-01' AND '2026-11-05'
        GROUP BY model
        ORDER BY cost DESC""",
    )
    assert by_model[0]["model"] == "openai/gpt-4o"
    assert to_money(by_model[0]["cost"]) == Decimal("1235.367891235")
    per_user = _rows(
        engine,
        """
        SELECT user_email, date, SUM(cost) AS cost
        FROM v_spend_daily
        WHERE date >= '2026-11-01'
        GROUP BY user_email, date
        ORDER BY date, user_email""",
    )
    assert (str(per_user[0]["date"]), per_user[0]["user_email"]) == (
        "2026-11-01",
        "alice@example.com",
    )
    assert to_money(per_user[0]["cost"]) == Decimal("0.300000001")


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
