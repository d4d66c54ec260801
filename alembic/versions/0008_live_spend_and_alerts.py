"""Live spend and alerts: what the live poll saw, and the alerts it raised.

- ``live_subjects``: every account (a registered management key) and key (an OpenRouter key of
  an account, by its ``/keys`` hash; or a registered ordinary key) the poll watches, the name
  OpenRouter gives it, whether ``/keys`` still lists it, its newest snapshot, and on the
  registered key's own row (``key_hash`` '') its last successful poll and last error.
- ``live_snapshots``: a subject's running totals (usage; daily, weekly, monthly; their BYOK
  twins; limit, limit remaining; an account's balance), written only when one changed.
- ``alert_states``: the last evaluation of each (rule, subject, threshold) and whether it fired
  in its period (day, month) or crossing; what makes an alert fire once, restarts included.
- ``alert_events`` and ``alert_notifications``: the alerts that fired and, per channel, the
  outbox row with its attempts and last result.

New tables only: nothing existing is rebuilt.

Revision ID: 0008
Revises: 0005 (re-chained after 0006 and 0007 at merge)
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(18, 9)
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "live_subjects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("scope", sa.String(10), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("listed", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", UTC, nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), nullable=True),
        sa.Column("polled_at", UTC, nullable=True),
        sa.Column("poll_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            ondelete="CASCADE",
            name=op.f("fk_live_subjects_api_key_id_api_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_live_subjects")),
        sa.UniqueConstraint(
            "api_key_id", "key_hash", name=op.f("uq_live_subjects_api_key_id_key_hash")
        ),
    )
    op.create_table(
        "live_snapshots",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("taken_at", UTC, nullable=False),
        *(
            sa.Column(name, MONEY, nullable=True)
            for name in (
                "usage",
                "usage_daily",
                "usage_weekly",
                "usage_monthly",
                "byok_usage",
                "byok_usage_daily",
                "byok_usage_weekly",
                "byok_usage_monthly",
                "spend_limit",
                "limit_remaining",
                "balance",
            )
        ),
        sa.Column("disabled", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["live_subjects.id"],
            ondelete="CASCADE",
            name=op.f("fk_live_snapshots_subject_id_live_subjects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_live_snapshots")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_live_snapshots_subject_id_taken_at"), "live_snapshots", ["subject_id", "taken_at"]
    )
    op.create_table(
        "alert_states",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("threshold", sa.String(40), nullable=False),
        sa.Column("subject_name", sa.String(255), nullable=False),
        sa.Column("value", MONEY, nullable=True),
        sa.Column("evaluated_at", UTC, nullable=False),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("period", sa.String(20), nullable=True),
        sa.Column("fired_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_states")),
        sa.UniqueConstraint(
            "rule", "subject", "threshold", name=op.f("uq_alert_states_rule_subject_threshold")
        ),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("subject_name", sa.String(255), nullable=False),
        sa.Column("threshold", sa.String(40), nullable=False),
        sa.Column("value", MONEY, nullable=True),
        sa.Column("period", sa.String(20), nullable=False),
        sa.Column("fired_at", UTC, nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
    )
    op.create_index(op.f("ix_alert_events_fired_at"), "alert_events", ["fired_at"])
    op.create_table(
        "alert_notifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_attempt_at", UTC, nullable=True),
        sa.Column("sent_at", UTC, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["alert_events.id"],
            ondelete="CASCADE",
            name=op.f("fk_alert_notifications_event_id_alert_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_notifications")),
    )
    op.create_index(op.f("ix_alert_notifications_event_id"), "alert_notifications", ["event_id"])
    op.create_index(op.f("ix_alert_notifications_status"), "alert_notifications", ["status"])


def downgrade() -> None:
    op.drop_table("alert_notifications")
    op.drop_table("alert_events")
    op.drop_table("alert_states")
    op.drop_table("live_snapshots")
    op.drop_table("live_subjects")
