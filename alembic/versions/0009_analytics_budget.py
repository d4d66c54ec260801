"""The analytics rate budget, shared by every process: when each request to
``/analytics/query`` was sent, per account.

- ``analytics_requests``: one row per request (retries included) sent through an account's
  management key in the last minute; a process about to send counts them first and waits
  when 64 were sent in the last 60 s (OpenRouter's limit). Older rows are deleted as new ones
  are reserved, so the table holds at most a minute of each account.

A new table only: nothing existing is rebuilt.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "analytics_requests",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["api_keys.id"],
            ondelete="CASCADE",
            name=op.f("fk_analytics_requests_account_id_api_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_requests")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_analytics_requests_account_id_sent_at"),
        "analytics_requests",
        ["account_id", "sent_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_analytics_requests_account_id_sent_at"), "analytics_requests")
    op.drop_table("analytics_requests")
