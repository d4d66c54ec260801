"""Guards: the audit trail of every change the watcher plans, sends or undoes on a key, and the
settings of each catalogued key that the changes are compared with.

- ``guard_actions``: one row per action (an alert rule's ``act``, a ``[[limits]]`` change):
  its rule, the key (hash, name) and its account's management key, the action, the period it
  belongs to, dry-run or enforce, its status, the key's settings before, wanted and after, what
  triggered it, its attempts and times. Unique per (rule, account, key, period): one action
  per rule, key and period, whatever the polls, restarts or daemons.
- ``account_keys.include_byok_in_limit`` and ``settings_seen_at``: with ``disabled``,
  ``limit`` and ``limit_reset``, a key's settings as the last ``/keys`` listing said, and when
  (drift from the declared limits is read from them).

A new table, and two nullable columns added in place (no table rebuilt: other tables reference
``account_keys`` with ON DELETE CASCADE).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 9)
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "guard_actions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("period", sa.String(40), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("restore", sa.String(15), nullable=False),
        sa.Column("before", sa.Text(), nullable=False),
        sa.Column("wanted", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("metric", sa.String(40), nullable=True),
        sa.Column("threshold", sa.String(40), nullable=True),
        sa.Column("value", MONEY, nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_attempt_at", UTC, nullable=True),
        sa.Column("sent_at", UTC, nullable=True),
        sa.Column("restored_at", UTC, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["api_keys.id"],
            ondelete="CASCADE",
            name=op.f("fk_guard_actions_account_id_api_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["alert_events.id"],
            ondelete="SET NULL",
            name=op.f("fk_guard_actions_event_id_alert_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_actions")),
        sa.UniqueConstraint(
            "rule",
            "account_id",
            "key_hash",
            "period",
            name=op.f("uq_guard_actions_rule_account_id_key_hash_period"),
        ),
    )
    op.create_index(op.f("ix_guard_actions_account_id"), "guard_actions", ["account_id"])
    op.create_index(op.f("ix_guard_actions_status"), "guard_actions", ["status"])
    op.add_column("account_keys", sa.Column("include_byok_in_limit", sa.Boolean(), nullable=True))
    op.add_column("account_keys", sa.Column("settings_seen_at", UTC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("account_keys", recreate="never") as batch:
        batch.drop_column("settings_seen_at")
        batch.drop_column("include_byok_in_limit")
    op.drop_index(op.f("ix_guard_actions_status"), "guard_actions")
    op.drop_index(op.f("ix_guard_actions_account_id"), "guard_actions")
    op.drop_table("guard_actions")
