"""Sync ledger, reasoning tokens and BYOK cost, exact money.

- ``sync_runs`` and ``sync_key_results``: every run and every key's outcome in it.
- ``usage_stats.tokens_reasoning`` and ``usage_stats.byok_cost``.
- ``usage_stats.cost`` widened from NUMERIC(10, 6) to NUMERIC(18, 9): OpenRouter reports 9
  decimals, and an account-wide management key can spend more than $9,999.999999 on one model
  in a day.
- ``usage_stats.id`` becomes BIGINT on PostgreSQL: every row an ``INSERT … ON CONFLICT``
  attempts consumes a sequence value, so frequent syncs would exhaust a 32-bit id.
  (SQLite's INTEGER PRIMARY KEY is already 64-bit.) Token counts become BIGINT too.
- ``api_keys.kind``: management / ordinary / NULL (unknown).

On SQLite only ``usage_stats`` is rebuilt (batch mode); ``api_keys`` gets a plain ADD COLUMN,
because rebuilding a table that others reference with ON DELETE CASCADE would delete their rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Batch mode rebuilds the table on SQLite; without this it would drop AUTOINCREMENT.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("keys_ok", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("keys_failed", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    op.create_index(op.f("ix_sync_runs_status"), "sync_runs", ["status"])

    op.create_table(
        "sync_key_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("rows_inserted", sa.Integer(), nullable=False),
        sa.Column("rows_updated", sa.Integer(), nullable=False),
        sa.Column("rows_unchanged", sa.Integer(), nullable=False),
        sa.Column("rows_deleted", sa.Integer(), nullable=False),
        sa.Column("http_requests", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sync_runs.id"],
            ondelete="CASCADE",
            name=op.f("fk_sync_key_results_run_id_sync_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            ondelete="CASCADE",
            name=op.f("fk_sync_key_results_api_key_id_api_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_key_results")),
    )
    op.create_index(op.f("ix_sync_key_results_run_id"), "sync_key_results", ["run_id"])
    op.create_index(
        op.f("ix_sync_key_results_api_key_id_run_id"), "sync_key_results", ["api_key_id", "run_id"]
    )

    op.add_column("api_keys", sa.Column("kind", sa.String(20)))

    with op.batch_alter_table("usage_stats", table_kwargs=KEEP_AUTOINCREMENT) as batch:
        batch.add_column(
            sa.Column("tokens_reasoning", sa.BigInteger(), server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("byok_cost", sa.Numeric(18, 9), server_default=sa.text("0.0")))
        batch.alter_column(
            "cost",
            type_=sa.Numeric(18, 9),
            existing_type=sa.Numeric(10, 6),
            existing_server_default=sa.text("0.0"),
        )
        for column in ("tokens_input", "tokens_output"):
            batch.alter_column(
                column,
                type_=sa.BigInteger(),
                existing_type=sa.Integer(),
                existing_server_default=sa.text("0"),
            )
        if not _is_sqlite():
            batch.alter_column(
                "id", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False
            )
    if not _is_sqlite():
        op.execute("ALTER SEQUENCE IF EXISTS usage_stats_id_seq AS BIGINT")


def downgrade() -> None:
    # Narrowing back to NUMERIC(10, 6) rounds sub-micro-dollar amounts and fails on rows above
    # $9,999.999999; that is the old schema's limit, not a bug here.
    if not _is_sqlite():
        op.execute("ALTER SEQUENCE IF EXISTS usage_stats_id_seq AS INTEGER")
    with op.batch_alter_table("usage_stats", table_kwargs=KEEP_AUTOINCREMENT) as batch:
        if not _is_sqlite():
            batch.alter_column(
                "id", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False
            )
        for column in ("tokens_input", "tokens_output"):
            batch.alter_column(
                column,
                type_=sa.Integer(),
                existing_type=sa.BigInteger(),
                existing_server_default=sa.text("0"),
            )
        batch.alter_column(
            "cost",
            type_=sa.Numeric(10, 6),
            existing_type=sa.Numeric(18, 9),
            existing_server_default=sa.text("0.0"),
        )
        batch.drop_column("byok_cost")
        batch.drop_column("tokens_reasoning")
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.drop_column("kind")
    op.drop_table("sync_key_results")
    op.drop_table("sync_runs")
