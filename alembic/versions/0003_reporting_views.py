"""Reporting views: ``v_usage_daily`` and ``v_spend_daily``.

So people (and Metabase, Grafana, psql, sqlite3) can answer "who spent what, on which model,
when" without knowing the joins:

- ``v_usage_daily``: one row per (user, key, UTC day, model): ``user_email, key_id, key_name,
  date, model, requests, tokens_input, tokens_output, tokens_reasoning, cost, byok_cost``.
- ``v_spend_daily``: one row per (user, key, UTC day), the day's totals over every model:
  ``user_email, key_id, key_name, date, models, requests, tokens_input, tokens_output,
  tokens_reasoning, cost, byok_cost``.

The SQL text is the same on SQLite and PostgreSQL. Money sums are done on whole nano-dollars
(``ROUND(cost * 1e9)``) and divided back once: on SQLite, where NUMERIC is a binary float, that
keeps the day's total exact (integers below 2^53 add exactly) instead of accumulating float
error; on PostgreSQL it is exact numeric arithmetic either way.

The views are not in the SQLAlchemy metadata (Alembic's autogenerate ignores views). Beware in
later migrations: on SQLite, a batch rebuild of ``usage_stats``, ``api_keys`` or ``users``
(rename of a temporary table) fails while a view refers to the table, so such a migration
must drop these views first and re-create them afterwards.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The definitions are frozen here on purpose: a migration must not change when the code does.
V_USAGE_DAILY = """
CREATE VIEW v_usage_daily AS
SELECT
    u.email AS user_email,
    k.id AS key_id,
    k.name AS key_name,
    s.date AS date,
    s.model AS model,
    COALESCE(s.requests_count, 0) AS requests,
    COALESCE(s.tokens_input, 0) AS tokens_input,
    COALESCE(s.tokens_output, 0) AS tokens_output,
    COALESCE(s.tokens_reasoning, 0) AS tokens_reasoning,
    COALESCE(s.cost, 0) AS cost,
    COALESCE(s.byok_cost, 0) AS byok_cost
FROM usage_stats AS s
JOIN api_keys AS k ON k.id = s.api_key_id
JOIN users AS u ON u.id = k.user_id
"""

V_SPEND_DAILY = """
CREATE VIEW v_spend_daily AS
SELECT
    u.email AS user_email,
    k.id AS key_id,
    k.name AS key_name,
    s.date AS date,
    COUNT(*) AS models,
    COALESCE(SUM(s.requests_count), 0) AS requests,
    COALESCE(SUM(s.tokens_input), 0) AS tokens_input,
    COALESCE(SUM(s.tokens_output), 0) AS tokens_output,
    COALESCE(SUM(s.tokens_reasoning), 0) AS tokens_reasoning,
    CAST(COALESCE(SUM(ROUND(s.cost * 1000000000)), 0) / 1000000000 AS NUMERIC(18, 9)) AS cost,
    CAST(COALESCE(SUM(ROUND(s.byok_cost * 1000000000)), 0) / 1000000000 AS NUMERIC(18, 9))
        AS byok_cost
FROM usage_stats AS s
JOIN api_keys AS k ON k.id = s.api_key_id
JOIN users AS u ON u.id = k.user_id
GROUP BY u.email, k.id, k.name, s.date
"""


def upgrade() -> None:
    op.execute(V_USAGE_DAILY)
    op.execute(V_SPEND_DAILY)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_spend_daily")
    op.execute("DROP VIEW IF EXISTS v_usage_daily")
