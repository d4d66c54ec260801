"""Every key of an account, and a year of history.

- ``account_keys``: one row per OpenRouter key of an account (the management key's
  ``api_keys.id``), as ``GET /keys`` lists it; kept, marked ``gone_at``, once it is no longer
  listed. ``registered_key_id`` links the same key registered as an ordinary key.
- ``key_usage_stats``: per-day, per-model rows of catalogued keys that are not registered
  (a registered key's rows stay in ``usage_stats`` under its own id).
- ``usage_stats.source`` / ``key_usage_stats.source``: ``activity`` or ``analytics``.
- ``api_keys.history_reached`` / ``history_done_at`` and the same on ``account_keys``: how far
  the import of a year of history (``/analytics/query``) has come.
- The reporting views gain a ``level`` column (``account`` or ``key``) and the per-key rows,
  so that a ``SUM`` over a view cannot add an account's rows to its keys' by accident.

Plain ADD COLUMN on SQLite for the existing tables (never a rebuild of a referenced table).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The views, frozen here: a migration must not change when the code does. A usage_stats row
# is a key's when its key is linked from the catalogue (a registered ordinary key), else the
# account's.
_METRICS = """
    COALESCE(s.requests_count, 0) AS requests,
    COALESCE(s.tokens_input, 0) AS tokens_input,
    COALESCE(s.tokens_output, 0) AS tokens_output,
    COALESCE(s.tokens_reasoning, 0) AS tokens_reasoning,
    COALESCE(s.cost, 0) AS cost,
    COALESCE(s.byok_cost, 0) AS byok_cost"""

V_USAGE_DAILY = f"""
CREATE VIEW v_usage_daily AS
SELECT
    'account' AS level, u.email AS user_email, k.id AS key_id, k.name AS key_name,
    k.id AS account_id, k.name AS account_name, CAST(NULL AS VARCHAR(128)) AS key_hash,
    s.date AS date, s.model AS model, {_METRICS}
FROM usage_stats AS s
JOIN api_keys AS k ON k.id = s.api_key_id
JOIN users AS u ON u.id = k.user_id
WHERE NOT EXISTS (SELECT 1 FROM account_keys AS l WHERE l.registered_key_id = k.id)
UNION ALL
SELECT
    'key', u.email, k.id, ak.name, a.id, a.name, ak.hash, s.date, s.model, {_METRICS}
FROM usage_stats AS s
JOIN api_keys AS k ON k.id = s.api_key_id
JOIN account_keys AS ak ON ak.registered_key_id = k.id
JOIN api_keys AS a ON a.id = ak.account_id
JOIN users AS u ON u.id = a.user_id
UNION ALL
SELECT
    'key', u.email, CAST(NULL AS INTEGER), ak.name, a.id, a.name, ak.hash, s.date, s.model,
    {_METRICS}
FROM key_usage_stats AS s
JOIN account_keys AS ak ON ak.id = s.account_key_id
JOIN api_keys AS a ON a.id = ak.account_id
JOIN users AS u ON u.id = a.user_id
"""  # noqa: S608 - only constants are formatted in

V_SPEND_DAILY = """
CREATE VIEW v_spend_daily AS
SELECT
    level, user_email, key_id, key_name, account_id, account_name, key_hash, date,
    COUNT(*) AS models,
    COALESCE(SUM(requests), 0) AS requests,
    COALESCE(SUM(tokens_input), 0) AS tokens_input,
    COALESCE(SUM(tokens_output), 0) AS tokens_output,
    COALESCE(SUM(tokens_reasoning), 0) AS tokens_reasoning,
    CAST(COALESCE(SUM(ROUND(cost * 1000000000)), 0) / 1000000000 AS NUMERIC(18, 9)) AS cost,
    CAST(COALESCE(SUM(ROUND(byok_cost * 1000000000)), 0) / 1000000000 AS NUMERIC(18, 9))
        AS byok_cost
FROM v_usage_daily
GROUP BY level, user_email, key_id, key_name, account_id, account_name, key_hash, date
"""

# 0003's definitions, for the downgrade.
OLD_USAGE_DAILY = """
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

OLD_SPEND_DAILY = """
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


def _money() -> sa.Numeric:  # type: ignore[type-arg]
    return sa.Numeric(18, 9)


def _big() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("workspace_id", sa.String(64)),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("limit", _money()),
        sa.Column("limit_reset", sa.String(20)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_upstream_at", sa.DateTime(timezone=True)),
        sa.Column("updated_upstream_at", sa.DateTime(timezone=True)),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gone_at", sa.DateTime(timezone=True)),
        sa.Column("registered_key_id", sa.Integer()),
        sa.Column("fetched_usage", _money()),
        sa.Column("fetched_daily", _money()),
        sa.Column("fetched_at", sa.DateTime(timezone=True)),
        sa.Column("fetch_error", sa.Text()),
        sa.Column("activity_digest", sa.String(64)),
        sa.Column("activity_rows", sa.Integer()),
        sa.Column("history_reached", sa.Date()),
        sa.Column("history_done_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["api_keys.id"],
            ondelete="CASCADE",
            name=op.f("fk_account_keys_account_id_api_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["registered_key_id"],
            ["api_keys.id"],
            ondelete="SET NULL",
            name=op.f("fk_account_keys_registered_key_id_api_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_keys")),
        sa.UniqueConstraint("account_id", "hash", name=op.f("uq_account_keys_account_id_hash")),
    )
    op.create_index(op.f("ix_account_keys_account_id"), "account_keys", ["account_id"])
    op.create_index(
        op.f("ix_account_keys_registered_key_id"), "account_keys", ["registered_key_id"]
    )
    op.create_table(
        "key_usage_stats",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("account_key_id", sa.Integer(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("requests_count", _big(), nullable=False),
        sa.Column("tokens_input", sa.BigInteger(), nullable=False),
        sa.Column("tokens_output", sa.BigInteger(), nullable=False),
        sa.Column("tokens_reasoning", sa.BigInteger(), nullable=False),
        sa.Column("cost", _money(), nullable=False),
        sa.Column("byok_cost", _money(), nullable=False),
        sa.Column("source", sa.String(10), nullable=False, server_default="activity"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.ForeignKeyConstraint(
            ["account_key_id"],
            ["account_keys.id"],
            ondelete="CASCADE",
            name=op.f("fk_key_usage_stats_account_key_id_account_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_usage_stats")),
        sa.UniqueConstraint(
            "account_key_id",
            "date",
            "model",
            name=op.f("uq_key_usage_stats_account_key_id_date_model"),
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_key_usage_stats_date"), "key_usage_stats", ["date"])
    op.add_column(
        "usage_stats",
        sa.Column("source", sa.String(10), nullable=False, server_default="activity"),
    )
    op.add_column("api_keys", sa.Column("history_reached", sa.Date()))
    op.add_column("api_keys", sa.Column("history_done_at", sa.DateTime(timezone=True)))
    op.execute("DROP VIEW v_spend_daily")
    op.execute("DROP VIEW v_usage_daily")
    op.execute(V_USAGE_DAILY)
    op.execute(V_SPEND_DAILY)


def downgrade() -> None:
    op.execute("DROP VIEW v_spend_daily")
    op.execute("DROP VIEW v_usage_daily")
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.drop_column("history_done_at")
        batch.drop_column("history_reached")
    with op.batch_alter_table("usage_stats", recreate="never") as batch:
        batch.drop_column("source")
    op.execute(OLD_USAGE_DAILY)
    op.execute(OLD_SPEND_DAILY)
    op.drop_table("key_usage_stats")
    op.drop_table("account_keys")
